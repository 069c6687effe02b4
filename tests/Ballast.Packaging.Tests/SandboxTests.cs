using System.Text.RegularExpressions;
using Ballast.TestSupport;

namespace Ballast.Packaging.Tests;

/// <summary>
/// The unit's sandbox checked against what ballastd really does. No systemd runs as PID 1 on a
/// build machine, so the unit cannot be started here; instead the installed ballastd serves as
/// an unprivileged user with the unit's capabilities, under strace, and every system call
/// and socket family it used must be one the unit allows. A call outside SystemCallFilter=
/// would fail with EPERM under systemd (SystemCallErrorNumber=), and only there.
/// </summary>
[CancelAfter(300_000)]
[NonParallelizable]
public partial class SandboxTests
{
    /// <summary>Any uid without privileges does; systemd would allocate one for the ballast user.</summary>
    private const string Uid = "61234";

    private ScratchRoot _root = null!;
    private UnitFile _unit = null!;
    private string _dir = null!;

    [OneTimeSetUp]
    public async Task Install()
    {
        _root = await Package.InstalledAsync();
        _unit = new UnitFile(_root["/lib/systemd/system/ballastd.service"]);
    }

    [SetUp]
    public async Task SetUp()
    {
        _dir = Path.Combine(Path.GetTempPath(), "ballast-sandbox-" + Guid.NewGuid().ToString("N")[..10]);
        Directory.CreateDirectory(_dir);
        // The data directory, the API socket and the trace belong to the service's user, as
        // StateDirectory= would make them.
        await Tool.RunOkAsync(Tool.Require("chown", "coreutils"), [$"{Uid}:{Uid}", _dir], Package.Limit);
    }

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    [Test]
    public async Task Ballastd_as_an_unprivileged_user_uses_only_the_system_calls_and_socket_families_the_unit_allows()
    {
        var filter = _unit.Service("SystemCallFilter");
        Assert.That(filter, Does.Not.StartWith("~"), "an allow list");
        var allowed = await ExpandAsync(filter.Split(' ', StringSplitOptions.RemoveEmptyEntries));
        var families = _unit.Service("RestrictAddressFamilies").Split(' ', StringSplitOptions.RemoveEmptyEntries);
        var trace = Path.Combine(_dir, "trace");
        var port = InstalledDaemon.FreePort();

        await using (var d = InstalledDaemon.Start(Tool.Require("setpriv", "util-linux"),
        [
            // The unit's User=, CapabilityBoundingSet= and AmbientCapabilities=, as systemd applies them.
            $"--reuid={Uid}", $"--regid={Uid}", "--clear-groups",
            $"--bounding-set=-all,{Caps("CapabilityBoundingSet")}", $"--inh-caps=-all,{Caps("AmbientCapabilities")}", $"--ambient-caps=-all,{Caps("AmbientCapabilities")}", "--",
            Tool.Require("strace", "strace"), "-f", "-qq", "-o", trace,
            _root["/usr/bin/ballastd"], "--config", _root["/etc/ballast/ballastd.json"],
            "--data-dir", Path.Combine(_dir, "data"), "--api-socket", Path.Combine(_dir, "api.sock"),
            "--nbd-listen", $"127.0.0.1:{port}", "--iscsi-listen", "off", "--pool-size", "1GiB", "--volume", "pkg:64MiB",
        ], new Dictionary<string, string> { ["HOME"] = _dir }, workingDirectory: "/"))
        {
            // .NET starts several times slower under strace.
            await d.WaitForAsync("stop with Ctrl-C or SIGTERM", TimeSpan.FromSeconds(120));
            await ExerciseAsync(port);
            // setpriv became strace; strace's child is ballastd, which gets the SIGTERM.
            var ballastd = int.Parse(File.ReadAllText($"/proc/{d.Pid}/task/{d.Pid}/children").Split(' ')[0]);
            Ballast.TestSupport.Interop.Signals.Send(ballastd, Ballast.TestSupport.Interop.Signals.SigTerm);
            Assert.That(await d.StopAsync(Package.Limit), Is.Zero, d.Output);
            Assert.That(d.Has("closed cleanly"), Is.True, d.Output);
        }

        var lines = await File.ReadAllLinesAsync(trace);
        var calls = lines.Select(l => CallName().Match(l)).Where(m => m.Success).Select(m => m.Groups[1].Value).ToHashSet();
        Assert.That(calls, Has.Count.GreaterThan(40), "the trace holds the daemon's calls");
        Assert.That(calls.Where(c => !allowed.Contains(c)).Order(), Is.Empty, $"system calls outside SystemCallFilter={filter}");
        var used = lines.Select(l => SocketFamily().Match(l)).Where(m => m.Success).Select(m => m.Groups[1].Value).ToHashSet();
        Assert.That(used, Does.Contain("AF_UNIX").And.Contain("AF_INET"), "the trace holds the API and NBD sockets");
        Assert.That(used.Where(f => !families.Contains(f)).Order(), Is.Empty, "socket families outside RestrictAddressFamilies=");
    }

    /// <summary>What a service does in its life: serve reads and writes with flushes, answer the API, snapshot.</summary>
    private async Task ExerciseAsync(int port)
    {
        var io = await Tool.RunOkAsync(Tool.Require("qemu-io", "qemu-utils"),
        [
            "-f", "raw",
            "-c", "write -P 0xab 4096 65536", "-c", "flush", "-c", "read -P 0xab 4096 65536",
            "-c", "write -z 131072 1M", "-c", "discard 2M 2M",
            $"nbd://127.0.0.1:{port}/pkg",
        ], Package.Limit);
        Assert.That(io.Stdout, Does.Not.Contain("Pattern verification failed"));
        var ctl = _root["/usr/bin/ballastctl"];
        var socket = Path.Combine(_dir, "api.sock");
        await Tool.RunOkAsync(ctl, ["--socket", socket, "snapshot", "create", "pkg", "s1"], Package.Limit);
        await Tool.RunOkAsync(ctl, ["--socket", socket, "volume", "resize", "pkg", "--size", "128MiB"], Package.Limit);
        await Tool.RunOkAsync(ctl, ["--socket", socket, "status"], Package.Limit);
    }

    /// <summary>A capability list of the unit in setpriv's spelling: CAP_NET_BIND_SERVICE becomes +net_bind_service.</summary>
    private string Caps(string key) =>
        string.Join(',', _unit.Service(key).Split(' ', StringSplitOptions.RemoveEmptyEntries)
            .Select(c => "+" + c["CAP_".Length..].ToLowerInvariant()));

    /// <summary>System call names of the filter's groups (@system-service ...), nested groups included, as systemd-analyze lists them.</summary>
    private static async Task<HashSet<string>> ExpandAsync(IEnumerable<string> items)
    {
        var names = new HashSet<string>(StringComparer.Ordinal);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var pending = new Queue<string>(items);
        while (pending.TryDequeue(out var item))
        {
            if (!item.StartsWith('@'))
            {
                names.Add(item);
                continue;
            }
            if (!seen.Add(item))
            {
                continue;
            }
            var r = await Tool.RunOkAsync(Tool.Require("systemd-analyze", "systemd"), ["syscall-filter", "--no-pager", item], Package.Limit);
            // The first line names the group; then "# description" and one member per line.
            foreach (var line in r.Stdout.Split('\n').Skip(1).Select(l => l.Trim()).Where(l => l.Length > 0 && l[0] != '#'))
            {
                pending.Enqueue(line);
            }
        }
        return names;
    }

    /// <summary>"1234  openat(AT_FDCWD, ..." as strace -f writes a call; resumed and signal lines do not match.</summary>
    [GeneratedRegex(@"^\d+\s+([a-z0-9_]+)\(")]
    private static partial Regex CallName();

    [GeneratedRegex(@"\bsocket\((AF_[A-Z0-9]+)")]
    private static partial Regex SocketFamily();
}
