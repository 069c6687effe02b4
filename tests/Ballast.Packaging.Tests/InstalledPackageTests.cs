using System.Globalization;
using System.Net.Sockets;
using System.Text;
using Ballast.Daemon.Configuration;
using Ballast.TestSupport;

namespace Ballast.Packaging.Tests;

/// <summary>
/// The package installed with dpkg --root into an empty directory: what the maintainer scripts
/// made there, and the installed programs run from it (the host's .NET plays no part).
/// </summary>
[CancelAfter(180_000)]
[NonParallelizable]
public class InstalledPackageTests
{
    private ScratchRoot _root = null!;
    private string _dir = null!;

    [OneTimeSetUp]
    public async Task Install() => _root = await Package.InstalledAsync();

    [SetUp]
    public void SetUp()
    {
        _dir = Path.Combine(Path.GetTempPath(), "ballast-pkg-" + Guid.NewGuid().ToString("N")[..10]);
        Directory.CreateDirectory(_dir);
    }

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    private string Ballastd => _root["/usr/bin/ballastd"];
    private string Ballastctl => _root["/usr/bin/ballastctl"];

    /// <summary>No dotnet anywhere on PATH and no DOTNET_ROOT: the package must bring its runtime.</summary>
    private static readonly Dictionary<string, string> NoDotnet = new() { ["PATH"] = "/nonexistent", ["DOTNET_ROOT"] = "/nonexistent" };

    private async Task<(string User, string Mode)> OwnerAndModeAsync(string path)
    {
        var r = await Tool.RunOkAsync(Tool.Require("stat", "coreutils"), ["-c", "%u:%g %a", path], Package.Limit);
        var parts = r.Stdout.Trim().Split(' ');
        return (parts[0], parts[1]);
    }

    [Test]
    public void Postinst_creates_the_ballast_system_user_without_a_login()
    {
        Tool.Require("systemd-sysusers", "systemd");
        var user = _root.PasswdEntry("ballast");
        Assert.That(user, Is.Not.Null, File.ReadAllText(_root["/etc/passwd"]));
        Assert.That(int.Parse(user![2], CultureInfo.InvariantCulture), Is.LessThan(1000), "a system user id");
        Assert.That(user[5], Is.EqualTo("/var/lib/ballast"));
        Assert.That(user[6], Does.EndWith("nologin"));
        Assert.That(File.ReadAllLines(_root["/etc/group"]), Has.Some.StartsWith("ballast:"));
    }

    [Test]
    public async Task Postinst_creates_the_socket_and_pool_directories_for_ballast_alone()
    {
        var user = _root.PasswdEntry("ballast")!;
        foreach (var dir in new[] { "/run/ballast", "/var/lib/ballast" })
        {
            Assert.That(_root[dir], Does.Exist);
            Assert.That(await OwnerAndModeAsync(_root[dir]), Is.EqualTo(($"{user[2]}:{user[3]}", "750")), dir);
        }
    }

    [Test]
    public void Postinst_enables_the_service_for_the_next_boot()
    {
        var link = new FileInfo(_root["/etc/systemd/system/multi-user.target.wants/ballastd.service"]);
        Assert.That(link.LinkTarget, Is.EqualTo("/lib/systemd/system/ballastd.service"));
    }

    [Test]
    public async Task Dpkg_records_the_default_config_as_a_conffile()
    {
        var status = await _root.DpkgOkAsync("--status", "ballast");
        Assert.That(status.Stdout, Does.Contain("Status: install ok installed"));
        Assert.That(status.Stdout, Does.Match(@"Conffiles:\s*\n /etc/ballast/ballastd\.json [0-9a-f]{32}"));
    }

    [Test]
    public async Task Installed_ballastd_prints_the_package_version_without_any_dotnet_on_the_system()
    {
        var r = await Tool.RunOkAsync(Ballastd, ["--version"], Package.Limit, env: NoDotnet);
        Assert.That(r.Stdout.Trim(), Does.StartWith(Package.Version));
        Assert.That(await File.ReadAllTextAsync(_root["/usr/lib/ballast/ballastd.runtimeconfig.json"]), Does.Contain("includedFrameworks"), "a self-contained app lists the frameworks it bundles");
    }

    [Test]
    public async Task Installed_ballastd_help_lists_every_setting_and_the_config_file()
    {
        var r = await Tool.RunOkAsync(Ballastd, ["--help"], Package.Limit, env: NoDotnet);
        Assert.That(r.Stdout, Does.Contain("--config").And.Contain("/etc/ballast/ballastd.json"));
        foreach (var def in SettingsSchema.All)
        {
            // Secrets are config-file keys only (a flag would show them in ps), so --help has no flag for them.
            Assert.That(r.Stdout, def.ConfigOnly ? Does.Not.Contain("--" + def.Key + " ") : Does.Contain("--" + def.Key + " "), def.Key);
        }
    }

    [Test]
    public async Task Installed_ballastctl_help_lists_its_commands_and_exit_codes()
    {
        var r = await Tool.RunOkAsync(Ballastctl, ["--help"], Package.Limit, env: NoDotnet);
        Assert.That(r.Stdout, Does.Contain("volume").And.Contain("snapshot").And.Contain("status").And.Contain("export"));
        Assert.That(r.Stdout, Does.Contain("exit codes").And.Contain("--socket"));
    }

    /// <summary>The installed ballastd with the installed config, moved to the test's own directory and port.</summary>
    private InstalledDaemon StartDaemon(int port, IDictionary<string, string>? env = null, string? workingDirectory = null) =>
        InstalledDaemon.Start(Ballastd,
        [
            "--config", _root["/etc/ballast/ballastd.json"],
            "--data-dir", Path.Combine(_dir, "data"),
            "--api-socket", Path.Combine(_dir, "api.sock"),
            "--nbd-listen", $"127.0.0.1:{port}", "--iscsi-listen", "off",
            "--pool-size", "1GiB",
            "--volume", "pkg:64MiB",
        ], env, workingDirectory);

    [Test]
    public async Task Installed_ballastd_serves_a_volume_to_nbdinfo_and_ballastctl_and_stops_cleanly_on_SIGTERM()
    {
        var nbdinfo = Tool.Require("nbdinfo", "libnbd-bin");
        var port = InstalledDaemon.FreePort();
        await using var d = StartDaemon(port);
        await d.WaitForAsync("stop with Ctrl-C or SIGTERM", Package.Limit);

        var size = await Tool.RunOkAsync(nbdinfo, ["--size", $"nbd://127.0.0.1:{port}/pkg"], Package.Limit);
        Assert.That(long.Parse(size.Stdout.Trim(), CultureInfo.InvariantCulture), Is.EqualTo(64L << 20));

        var list = await Tool.RunOkAsync(Ballastctl, ["--socket", Path.Combine(_dir, "api.sock"), "volume", "list"], Package.Limit);
        Assert.That(list.Stdout, Does.Match(@"(?m)^pkg\s+64 MiB\s+4096\s+rw"), list.ToString());

        Assert.That(await d.StopAsync(Package.Limit), Is.Zero, d.Output);
        Assert.That(d.Has("closed cleanly"), Is.True, d.Output);
    }

    [Test]
    public async Task Installed_ballastd_tells_systemd_READY_when_serving_and_STOPPING_on_SIGTERM()
    {
        var notifyPath = Path.Combine(_dir, "notify.sock");
        using var notify = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
        notify.Bind(new UnixDomainSocketEndPoint(notifyPath));
        var port = InstalledDaemon.FreePort();
        await using var d = StartDaemon(port, new Dictionary<string, string> { ["NOTIFY_SOCKET"] = notifyPath });

        var ready = await ReceiveUntilAsync(notify, "READY=1");
        Assert.That(ready, Does.Contain("READY=1"), d.Output);
        // Ready means serving: a client gets the volume at once.
        Assert.That((await Tool.RunAsync(Tool.Require("nbdinfo", "libnbd-bin"), ["--size", $"nbd://127.0.0.1:{port}/pkg"], Package.Limit)).ExitCode, Is.Zero);

        Assert.That(await d.StopAsync(Package.Limit), Is.Zero, d.Output);
        Assert.That(await ReceiveUntilAsync(notify, "STOPPING=1"), Does.Contain("STOPPING=1"));
    }

    [Test]
    public async Task Installed_ballastd_tells_systemd_READY_only_once_ballastctl_can_reach_it()
    {
        var notifyPath = Path.Combine(_dir, "notify.sock");
        using var notify = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
        notify.Bind(new UnixDomainSocketEndPoint(notifyPath));
        await using var d = StartDaemon(InstalledDaemon.FreePort(), new Dictionary<string, string> { ["NOTIFY_SOCKET"] = notifyPath });
        await ReceiveUntilAsync(notify, "READY=1");
        // `systemctl start ballastd && ballastctl ...` relies on this: systemctl start returns on READY=1.
        var status = await Tool.RunAsync(Ballastctl, ["--socket", Path.Combine(_dir, "api.sock"), "volume", "list"], Package.Limit);
        Assert.That(status.ExitCode, Is.Zero, $"{status}\n{d.Output}");
        Assert.That(status.Stdout, Does.Contain("pkg"));
        Assert.That(await d.StopAsync(Package.Limit), Is.Zero, d.Output);
    }

    [Test]
    public async Task Installed_ballastd_started_in_the_root_directory_as_systemd_does_watches_no_files()
    {
        var port = InstalledDaemon.FreePort();
        await using var d = StartDaemon(port, workingDirectory: "/");
        await d.WaitForAsync("stop with Ctrl-C or SIGTERM", Package.Limit);
        // Every inotify watch is one "inotify wd:" line in the fdinfo of its inotify descriptor.
        var watches = Directory.GetFiles($"/proc/{d.Pid}/fdinfo")
            .Sum(f => { try { return File.ReadLines(f).Count(l => l.StartsWith("inotify wd:", StringComparison.Ordinal)); } catch (IOException) { return 0; } });
        Assert.That(watches, Is.Zero, "a file watcher on the working directory walks the whole file system from /");
        Assert.That(await d.StopAsync(Package.Limit), Is.Zero, d.Output);
    }

    /// <summary>Datagrams from the notify socket until one holds the text; all of them, joined.</summary>
    private static async Task<string> ReceiveUntilAsync(Socket socket, string text)
    {
        var all = new StringBuilder();
        var buffer = new byte[4096];
        using var cts = new CancellationTokenSource(Package.Limit);
        while (!all.ToString().Contains(text, StringComparison.Ordinal))
        {
            int n;
            try
            {
                n = await socket.ReceiveAsync(buffer, SocketFlags.None, cts.Token);
            }
            catch (OperationCanceledException)
            {
                Assert.Fail($"no {text} within {Package.Limit.TotalSeconds} s; received: {all}");
                throw;
            }
            all.Append(Encoding.UTF8.GetString(buffer, 0, n)).Append('\n');
        }
        return all.ToString();
    }
}
