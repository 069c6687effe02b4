using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Ballast.TestSupport;
using static Ballast.TestSupport.NbdRawClient;

namespace Ballast.Daemon.Tests.Process;

/// <summary>ballastd as an operator runs it: flags, readiness, attach hints, clean stop, restart, refusals.</summary>
[CancelAfter(180_000)]
public class DaemonProcessTests
{
    private string _dir = null!;

    [SetUp]
    public void SetUp()
    {
        _dir = Path.Combine(Path.GetTempPath(), "ballastd-test-" + Guid.NewGuid().ToString("N")[..10]);
        Directory.CreateDirectory(_dir);
    }

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    private string DataDir => Path.Combine(_dir, "data");

    /// <summary>A bearer token file as --api-token-file wants it (its owner's alone).</summary>
    private string TokenFile()
    {
        var path = Path.Combine(_dir, "api.token");
        File.WriteAllText(path, "test-token-0123456789abcdef\n");
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        return path;
    }

    [Test]
    public async Task Starts_prints_how_to_attach_and_stops_cleanly_then_restarts_with_the_data()
    {
        var data = Enumerable.Range(0, 65536).Select(i => (byte)(i * 7)).ToArray();
        await using (var d = await DaemonProcess.StartReadyAsync(DataDir, ["--volume", "demo:64MiB", "--pool-size", "1GiB"]))
        {
            Assert.That(d.Has($"nbd-client 127.0.0.1 {d.Port} /dev/nbd0 -N demo"), Is.True, d.Output);
            Assert.That(d.Has($"nbdinfo nbd://127.0.0.1:{d.Port}/demo"), Is.True, d.Output);
            Assert.That(d.Has("volume demo: created, 64 MiB"), Is.True, d.Output);
            Assert.That(d.Has($"ballastctl --socket {d.ApiSocket} volume list"), Is.True, "the API socket is not the one ballastctl finds by default");

            var info = await Tool.RunOkAsync(Tool.Require("nbdinfo", "libnbd-bin"), ["--json", $"nbd://127.0.0.1:{d.Port}/demo"], TimeSpan.FromSeconds(60));
            using (var doc = JsonDocument.Parse(info.Stdout))
            {
                Assert.That(doc.RootElement.GetProperty("exports")[0].GetProperty("export-size").GetInt64(), Is.EqualTo(64L << 20));
            }

            var (c, _, _) = await OpenAsync(d.Endpoint, "demo");
            await using (c)
            {
                // Written but never flushed: a clean stop must still keep it.
                await c.SendRequestAsync(0, CmdWrite, 1, 1 << 20, (uint)data.Length, data);
                Assert.That((await c.ReadSimpleReplyAsync()).Error, Is.Zero);
            }
            Assert.That(await d.StopAsync(), Is.Zero, d.Output);
            Assert.That(d.Has("closed cleanly"), Is.True, d.Output);
            Assert.That(d.Has("disconnected from export demo"), Is.True, "one line per connection close");
        }

        await using (var d = await DaemonProcess.StartReadyAsync(DataDir, ["--volume", "demo:64MiB"]))
        {
            Assert.That(d.Has("last shutdown was clean"), Is.True, d.Output);
            Assert.That(d.Has("created"), Is.False, "the volume already exists");
            var (c, _, _) = await OpenAsync(d.Endpoint, "demo");
            await using (c)
            {
                await c.SendRequestAsync(0, CmdRead, 2, 1 << 20, (uint)data.Length);
                Assert.That((await c.ReadSimpleReplyAsync(data.Length)).Data, Is.EqualTo(data));
            }
            Assert.That(await d.StopAsync(), Is.Zero);
        }
    }

    [Test]
    public async Task Tells_systemd_ready_only_when_serving_and_stopping_on_sigterm()
    {
        var path = Path.Combine(_dir, "notify.sock");
        using var listener = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
        listener.Bind(new UnixDomainSocketEndPoint(path));
        await using var d = DaemonProcess.Start(DataDir, ["--volume", "a:16MiB", "--pool-size", "1GiB"], env: new Dictionary<string, string> { ["NOTIFY_SOCKET"] = path, ["WATCHDOG_USEC"] = "900000" });
        var buf = new byte[4096];
        listener.ReceiveTimeout = 60_000;
        var ready = Encoding.UTF8.GetString(buf, 0, listener.Receive(buf));
        Assert.That(ready, Does.Contain("READY=1"));
        Assert.That(ready, Does.Contain("STATUS=serving 1 volume(s)"));
        // READY comes after the listener is open: a client connects at once.
        var (c, size, _) = await OpenAsync(d.Endpoint, "a");
        await c.DisposeAsync();
        Assert.That(size, Is.EqualTo(16UL << 20));
        // The iSCSI portal too: READY waits for it.
        Assert.That(ready, Does.Contain("over NBD and iSCSI"));
        var inq = await Tool.RunOkAsync(Tool.Require("iscsi-inq", "libiscsi-bin"), [d.IscsiUrl("a")], TimeSpan.FromSeconds(60));
        Assert.That(inq.Stdout, Does.Contain("DIRECT_ACCESS"));
        // The watchdog is fed from the pool's health probe, a few times per interval, with a status line.
        var pings = 0;
        var sw = System.Diagnostics.Stopwatch.StartNew();
        while (pings < 3 && sw.Elapsed < TimeSpan.FromSeconds(30))
        {
            var msg = Encoding.UTF8.GetString(buf, 0, listener.Receive(buf));
            if (msg.Contains("WATCHDOG=1", StringComparison.Ordinal))
            {
                Assert.That(msg, Does.Contain("STATUS=serving 1 volume(s)"));
                pings++;
            }
        }
        Assert.That(pings, Is.EqualTo(3), "WATCHDOG=1 arrives regularly");
        // No reload: SIGHUP is logged and ignored, the volume stays served.
        Ballast.TestSupport.Interop.Signals.Send(d.Pid, Ballast.TestSupport.Interop.Signals.SigHup);
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (!d.Output.Contains("SIGHUP ignored", StringComparison.Ordinal) && DateTime.UtcNow < deadline)
        {
            await Task.Delay(50);
        }
        Assert.That(d.Output, Does.Contain("SIGHUP ignored"));
        var (again, _, _) = await OpenAsync(d.Endpoint, "a");
        await again.DisposeAsync();
        Ballast.TestSupport.Interop.Signals.Send(d.Pid, Ballast.TestSupport.Interop.Signals.SigTerm);
        string stopping;
        do
        {
            stopping = Encoding.UTF8.GetString(buf, 0, listener.Receive(buf));
        }
        while (!stopping.Contains("STOPPING=1", StringComparison.Ordinal));
        Assert.That(await d.WaitForExitAsync(TimeSpan.FromSeconds(60)), Is.Zero);
    }

    [TestCase("--bogus-flag")]
    [TestCase("--pool-size")]
    public async Task An_unknown_flag_or_a_missing_value_exits_2_in_two_lines_without_the_help(string arg)
    {
        var r = await Tool.RunAsync("dotnet", [DaemonProcess.Binary, arg], TimeSpan.FromSeconds(60));
        Assert.That(r.ExitCode, Is.EqualTo(2), r.ToString());
        Assert.That(r.Stderr, Does.Contain("ballastd: ").And.Contain(arg).And.Contain("ballastd --help lists every setting"));
        Assert.That(r.Stderr.Trim().Split('\n'), Has.Length.EqualTo(2), r.Stderr);
        Assert.That(r.Stdout, Is.Empty, "no help dump");
    }

    [Test]
    public async Task A_bad_flag_value_exits_2_naming_the_flag()
    {
        await using var d = DaemonProcess.Start(DataDir, ["--volume", "demo:lots"]);
        Assert.That(await d.WaitForExitAsync(TimeSpan.FromSeconds(60)), Is.EqualTo(2));
        Assert.That(d.Output, Does.Contain("invalid setting --volume").And.Contain("not a size"));
    }

    [Test]
    public async Task A_port_in_use_exits_1_saying_which_address_before_the_data_directory_is_touched()
    {
        using var taken = new TcpListener(IPAddress.Loopback, 0);
        taken.Start();
        var port = ((IPEndPoint)taken.LocalEndpoint).Port;
        await using (var d = DaemonProcess.Start(DataDir, ["--pool-size", "1GiB"], port))
        {
            Assert.That(await d.WaitForExitAsync(TimeSpan.FromSeconds(60)), Is.EqualTo(1));
            Assert.That(d.Output, Does.Contain($"NBD: cannot listen on 127.0.0.1:{port}").And.Contain("could not start"));
            Assert.That(d.Output, Does.Not.Contain("new pool created"));
        }
        Assert.That(Directory.Exists(DataDir) ? Directory.GetFileSystemEntries(DataDir) : [], Is.Empty, "a failed first start leaves no pool behind");
        // And the same for the replication and API ports, on a data directory that holds a pool.
        await using (var first = await DaemonProcess.StartReadyAsync(DataDir, ["--pool-size", "1GiB"]))
        {
            await first.StopAsync();
        }
        await using (var d = DaemonProcess.Start(DataDir, ["--pool-size", "1GiB", "--api-listen", $"127.0.0.1:{port}", "--api-token-file", TokenFile()]))
        {
            Assert.That(await d.WaitForExitAsync(TimeSpan.FromSeconds(60)), Is.EqualTo(1));
            Assert.That(d.Output, Does.Contain($"api-listen: cannot listen on 127.0.0.1:{port}"));
            Assert.That(d.Output, Does.Not.Contain("opened in"), "the pool was not opened");
        }
        await using var again = await DaemonProcess.StartReadyAsync(DataDir, ["--pool-size", "1GiB"]);
        Assert.That(again.Output, Does.Contain("last shutdown was clean"));
    }

    [Test]
    public async Task A_second_daemon_on_the_same_data_directory_is_refused()
    {
        await using var first = await DaemonProcess.StartReadyAsync(DataDir, ["--pool-size", "1GiB"]);
        await using var second = DaemonProcess.Start(DataDir, []);
        Assert.That(await second.WaitForExitAsync(TimeSpan.FromSeconds(60)), Is.EqualTo(1), second.Output);
        Assert.That(second.Output, Does.Contain("could not start"));
        Assert.That(await first.StopAsync(), Is.Zero);
    }

    [Test]
    public async Task Help_lists_every_setting()
    {
        var r = await Tool.RunOkAsync("dotnet", [DaemonProcess.Binary, "--help"], TimeSpan.FromSeconds(60));
        foreach (var def in Ballast.Daemon.Configuration.SettingsSchema.All)
        {
            if (def.ConfigOnly)
            {
                // Secrets are config-file keys only: a flag would show them in ps.
                Assert.That(r.Stdout, Does.Not.Contain("--" + def.Key + " "), def.Key);
                continue;
            }
            Assert.That(r.Stdout, Does.Contain("--" + def.Key), def.Key);
        }
        Assert.That(r.Stdout, Does.Contain("--config"));
    }

    [Test]
    public async Task The_pool_file_is_written_just_ahead_of_the_log_and_stays_thin()
    {
        Directory.CreateDirectory(DataDir);
        var fs = (await Tool.RunOkAsync("stat", ["-f", "--format=%T", DataDir], TimeSpan.FromSeconds(10))).Stdout.Trim();
        Assume.That(fs, Is.AnyOf("ext2/ext3", "xfs"), $"ballastd prepares space only on ext4 and xfs; the data directory is on {fs}");
        await using (var d = await DaemonProcess.StartReadyAsync(DataDir, ["--volume", "demo:64MiB", "--pool-size", "1GiB", "--pool-prepare-ahead", "32MiB"]))
        {
            double prepared = 0;
            for (var i = 0; i < 100 && (prepared = await d.MetricAsync("ballast_pool_prepared_free_segments")) < 8; i++)
            {
                await Task.Delay(100);
            }
            Assert.That(prepared, Is.EqualTo(8), "32 MiB of 4 MiB segments should be kept prepared");
            Assert.That(await d.MetricAsync("ballast_pool_prepared_bytes_total"), Is.InRange(32L << 20, 40L << 20));
            var allocated = await AllocatedBytesAsync(Path.Combine(DataDir, "pool.dat"));
            Assert.That(allocated, Is.InRange(32L << 20, 128L << 20), "the pool file should hold the window and little more");
        }
        Directory.Delete(DataDir, recursive: true);
        await using (var d = await DaemonProcess.StartReadyAsync(DataDir, ["--volume", "demo:64MiB", "--pool-size", "1GiB", "--pool-prepare-ahead", "0"]))
        {
            await Task.Delay(1000);
            Assert.That(await d.MetricAsync("ballast_pool_prepared_bytes_total"), Is.Zero, "--pool-prepare-ahead 0 should turn zeroing off");
        }
    }

    private static async Task<long> AllocatedBytesAsync(string path)
    {
        var r = await Tool.RunOkAsync("stat", ["--format=%b %B", path], TimeSpan.FromSeconds(10));
        var parts = r.Stdout.Trim().Split(' ');
        return long.Parse(parts[0]) * long.Parse(parts[1]);
    }
}
