using System.Globalization;
using System.Text.RegularExpressions;
using Ballast.Control;
using Ballast.Daemon;
using Ballast.Daemon.Configuration;
using Ballast.TestSupport;

namespace Ballast.Packaging.Tests;

/// <summary>
/// ballastd.service as installed: systemd accepts it, its hardening scores low, and its
/// directories agree with the default config, tmpfiles.d, sysusers.d and ballastctl.
/// </summary>
[CancelAfter(120_000)]
[NonParallelizable]
public class UnitFileTests
{
    private ScratchRoot _root = null!;
    private UnitFile _unit = null!;

    [OneTimeSetUp]
    public async Task Install()
    {
        _root = await Package.InstalledAsync();
        // The unit refers to sysinit.target, multi-user.target and so on, which systemd-analyze
        // --root looks for in the root: give it the host's. They go to /usr/lib/systemd/system,
        // apart from /lib/systemd/system where the package put ballastd.service.
        var units = _root["/usr/lib/systemd/system"];
        Directory.CreateDirectory(units);
        await Tool.RunOkAsync(Tool.Require("cp", "coreutils"), ["-a", "/usr/lib/systemd/system/.", units], Package.Limit);
        _unit = new UnitFile(_root["/lib/systemd/system/ballastd.service"]);
    }

    private static string Analyze => Tool.Require("systemd-analyze", "systemd");

    [Test]
    public async Task Systemd_analyze_verify_accepts_the_installed_unit_without_a_warning()
    {
        var r = await Tool.RunAsync(Analyze, ["verify", "--root=" + _root.Dir, "ballastd.service"], Package.Limit);
        Assert.That(r.ExitCode, Is.Zero, r.ToString());
        // Unknown keys and bad values are only warnings (exit 0), so any output is a failure too.
        Assert.That(r.Stdout + r.Stderr, Is.Empty, r.ToString());
    }

    [Test]
    public async Task Systemd_analyze_security_rates_the_unit_exposure_at_most_2()
    {
        var r = await Tool.RunOkAsync(Analyze, ["security", "--offline=true", "--root=" + _root.Dir, "--no-pager", "ballastd.service"], Package.Limit);
        var m = Regex.Match(r.Stdout, @"Overall exposure level for ballastd\.service: (\d+\.\d+)");
        Assert.That(m.Success, Is.True, r.ToString());
        // 0 is fully locked down, 10 is no hardening; the unit gave 1.8 when this was written.
        Assert.That(double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture), Is.LessThanOrEqualTo(2.0), r.Stdout);
    }

    [Test]
    public void Unit_runs_ballastd_with_the_shipped_config_as_a_notify_service_with_a_watchdog()
    {
        Assert.That(_unit.Service("ExecStart"), Is.EqualTo($"/usr/bin/ballastd --config {SettingsLoader.DefaultConfigFile}"));
        Assert.That(_unit.Service("Type"), Is.EqualTo("notify"));
        Assert.That(_unit.Service("WatchdogSec"), Is.Not.Empty);
        Assert.That(_unit.Service("RestartPreventExitStatus"), Is.EqualTo(DaemonCommand.ExitBadSettings.ToString(CultureInfo.InvariantCulture)), "a bad setting is not retried");
        // ballastd has no reload (SIGHUP is logged and ignored).
        Assert.That(_unit.All("Service", "ExecReload"), Is.Empty);
    }

    [Test]
    public void Default_config_loads_and_names_the_units_state_and_runtime_directories()
    {
        var settings = SettingsLoader.Load(new Dictionary<string, IReadOnlyList<string>>(), _root["/etc/ballast/ballastd.json"]);
        Assert.That(settings.DataDir, Is.EqualTo("/var/lib/" + _unit.Service("StateDirectory")));
        Assert.That(settings.ApiSocketPath, Is.EqualTo($"/run/{_unit.Service("RuntimeDirectory")}/api.sock"));
        Assert.That(settings.ApiSocketPath, Is.EqualTo(ControlClient.DefaultSocket), "ballastctl finds the socket without --socket");
        Assert.That(settings.NbdListen.Select(e => e.ToString()), Is.EqualTo(new[] { "127.0.0.1:10809" }), "loopback only until the admin opens it");
    }

    [Test]
    public void Tmpfiles_and_sysusers_give_the_units_user_the_same_directories()
    {
        var user = _unit.Service("User");
        Assert.That(_unit.Service("Group"), Is.EqualTo(user));
        var tmpfiles = File.ReadAllLines(_root["/usr/lib/tmpfiles.d/ballast.conf"])
            .Where(l => l.Length > 0 && l[0] != '#')
            .Select(l => string.Join(' ', l.Split(' ', StringSplitOptions.RemoveEmptyEntries)))
            .ToList();
        var state = "/var/lib/" + _unit.Service("StateDirectory");
        var runtime = "/run/" + _unit.Service("RuntimeDirectory");
        Assert.That(tmpfiles, Is.EquivalentTo(new[]
        {
            $"d {runtime} {_unit.Service("RuntimeDirectoryMode")} {user} {user} -",
            $"d {state} {_unit.Service("StateDirectoryMode")} {user} {user} -",
        }));
        var sysusers = File.ReadAllLines(_root["/usr/lib/sysusers.d/ballast.conf"]).Where(l => l.StartsWith("u ", StringComparison.Ordinal)).ToList();
        Assert.That(sysusers, Has.Count.EqualTo(1));
        Assert.That(sysusers[0], Does.Match($@"^u\s+{user}\s+-\s+"".+""\s+{Regex.Escape(state)}$"));
    }
}
