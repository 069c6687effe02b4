using System.Globalization;
using System.Text.Json;
using Ballast.Daemon.Tests.Process;
using Ballast.TestSupport;
using static Ballast.TestSupport.NbdRawClient;

namespace Ballast.Daemon.Tests.Cli;

/// <summary>ballastctl against a running ballastd: the operator's whole path, and each error with its exit code.</summary>
[CancelAfter(300_000)]
[NonParallelizable]
public class CliEndToEndTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(60);
    private string _dir = null!;
    private DaemonProcess _daemon = null!;

    [OneTimeSetUp]
    public async Task StartDaemon()
    {
        _dir = Path.Combine(Path.GetTempPath(), "ballastctl-test-" + Guid.NewGuid().ToString("N")[..10]);
        _daemon = await DaemonProcess.StartReadyAsync(Path.Combine(_dir, "data"), ["--pool-size", "2GiB"]);
    }

    [OneTimeTearDown]
    public async Task StopDaemon()
    {
        await _daemon.StopAsync();
        await _daemon.DisposeAsync();
        Directory.Delete(_dir, recursive: true);
    }

    private Task<Tool.Result> Ctl(params string[] args) =>
        Tool.RunAsync("dotnet", [Path.Combine(AppContext.BaseDirectory, "ballastctl.dll"), "--socket", _daemon.ApiSocket, .. args], Limit);

    private async Task<JsonElement> CtlJson(params string[] args)
    {
        var r = await Ctl([.. args, "--json"]);
        Assert.That(r.ExitCode, Is.Zero, r.ToString());
        return JsonDocument.Parse(r.Stdout).RootElement.Clone();
    }

    private async Task<long> NbdinfoSize(string export)
    {
        var r = await Tool.RunOkAsync(Tool.Require("nbdinfo", "libnbd-bin"), ["--size", $"nbd://127.0.0.1:{_daemon.Port}/{export}"], Limit);
        return long.Parse(r.Stdout.Trim(), CultureInfo.InvariantCulture);
    }

    [Test]
    public async Task Create_list_attach_snapshot_clone_read_resize_delete()
    {
        var create = await Ctl("volume", "create", "app", "--size", "256MiB");
        Assert.That(create.ExitCode, Is.Zero, create.ToString());
        Assert.That(create.Stdout, Does.Contain("created volume app, 256 MiB").And.Contain($"nbd://127.0.0.1:{_daemon.Port}/app"));

        var list = await Ctl("volume", "list");
        Assert.That(list.Stdout, Does.Match(@"(?m)^NAME\s+SIZE\s+BLOCK"));
        Assert.That(list.Stdout, Does.Match(@"(?m)^app\s+256 MiB\s+4096\s+rw"));

        // Served at once, without a restart: over NBD and over iSCSI.
        Assert.That(await NbdinfoSize("app"), Is.EqualTo(256L << 20));
        Assert.That(create.Stdout, Does.Contain(_daemon.IscsiUrl("app")));
        var inq = await Tool.RunOkAsync(Tool.Require("iscsi-inq", "libiscsi-bin"), [_daemon.IscsiUrl("app")], Limit);
        Assert.That(inq.Stdout, Does.Contain("DIRECT_ACCESS"));
        Assert.That(await IscsiLastLba("app"), Is.EqualTo((256L << 20) / 4096 - 1));
        var exports = await CtlJson("export", "list");
        var iscsi = exports.GetProperty("exports").EnumerateArray().Single(e => e.GetProperty("protocol").GetString() == "iscsi" && e.GetProperty("volume").GetString() == "app");
        Assert.That(iscsi.GetProperty("name").GetString(), Is.EqualTo("iqn.2026-11.io.ballast:app"));
        Assert.That(iscsi.GetProperty("lun").GetInt32(), Is.Zero);
        Assert.That(iscsi.GetProperty("portals").EnumerateArray().Select(p => p.GetString()), Is.EqualTo(new[] { $"127.0.0.1:{_daemon.IscsiPort}" }));

        var data = Enumerable.Range(0, 65536).Select(i => (byte)(i * 13)).ToArray();
        var (c, _, _) = await OpenAsync(_daemon.Endpoint, "app");
        await using (c)
        {
            await c.SendRequestAsync(FlagFua, CmdWrite, 1, 1 << 20, (uint)data.Length, data);
            Assert.That((await c.ReadSimpleReplyAsync()).Error, Is.Zero);
        }

        var snap = await Ctl("snapshot", "create", "app", "before");
        Assert.That(snap.ExitCode, Is.Zero, snap.ToString());
        Assert.That(snap.Stdout, Does.Contain("app@before"));
        var snaps = await CtlJson("snapshot", "list", "app");
        Assert.That(snaps.EnumerateArray().Select(s => s.GetProperty("name").GetString()), Is.EqualTo(new[] { "app@before" }));

        var clone = await Ctl("volume", "clone", "app@before", "app-copy");
        Assert.That(clone.ExitCode, Is.Zero, clone.ToString());
        var (cc, _, _) = await OpenAsync(_daemon.Endpoint, "app-copy");
        await using (cc)
        {
            await cc.SendRequestAsync(0, CmdRead, 2, 1 << 20, (uint)data.Length);
            Assert.That((await cc.ReadSimpleReplyAsync(data.Length)).Data, Is.EqualTo(data), "the clone reads back what the volume held at the snapshot");
        }

        var inspect = await CtlJson("volume", "inspect", "app-copy");
        Assert.That(inspect.GetProperty("parent").GetString(), Is.EqualTo("app@before"));
        Assert.That(inspect.GetProperty("io").GetProperty("reads").GetInt64(), Is.EqualTo(1));
        // The clone maps the snapshot's 64 KiB: its data, counted where it is shared too.
        Assert.That(inspect.GetProperty("usage").GetProperty("dataBytes").GetInt64(), Is.EqualTo(65536));
        Assert.That(inspect.GetProperty("usage").GetProperty("dataRuns").GetInt64(), Is.EqualTo(1));
        var human = await Ctl("volume", "inspect", "app");
        Assert.That(human.Stdout, Does.Match(@"(?m)^data\s+64 KiB in 1 run on the device \(average 64 KiB\)"));
        Assert.That(human.Stdout, Does.Match(@"(?m)^zeroes\s+0 B"));

        var resize = await Ctl("volume", "resize", "app", "--size", "512MiB");
        Assert.That(resize.ExitCode, Is.Zero, resize.ToString());
        Assert.That(resize.Stdout, Does.Contain("512 MiB"));
        Assert.That(await NbdinfoSize("app"), Is.EqualTo(512L << 20), "a new connection sees the new size");
        Assert.That(await IscsiLastLba("app"), Is.EqualTo((512L << 20) / 4096 - 1), "so does a new iSCSI session");

        Assert.That((await Ctl("volume", "delete", "app-copy")).ExitCode, Is.Zero);
        var delete = await Ctl("volume", "delete", "app", "--force");
        Assert.That(delete.ExitCode, Is.Zero, delete.ToString());
        var after = await CtlJson("volume", "list");
        Assert.That(after.EnumerateArray().Select(v => v.GetProperty("name").GetString()), Does.Not.Contain("app").And.Not.Contain("app-copy"));
        Assert.That((await Tool.RunAsync("nbdinfo", [$"nbd://127.0.0.1:{_daemon.Port}/app"], Limit)).ExitCode, Is.Not.Zero, "a deleted volume is no longer served");
        Assert.That((await Tool.RunAsync("iscsi-inq", [_daemon.IscsiUrl("app")], Limit)).ExitCode, Is.Not.Zero, "nor is its iSCSI target");
    }

    private async Task<long> IscsiLastLba(string volume)
    {
        var r = await Tool.RunOkAsync(Tool.Require("iscsi-readcapacity16", "libiscsi-bin"), [_daemon.IscsiUrl(volume)], Limit);
        var line = r.Stdout.Split('\n').Single(l => l.StartsWith("RETURNED LOGICAL BLOCK ADDRESS:", StringComparison.Ordinal));
        return long.Parse(line.Split(':')[1].Trim(), CultureInfo.InvariantCulture);
    }

    [Test]
    public async Task Delete_is_refused_while_an_iscsi_session_is_connected_and_force_disconnects_it()
    {
        Assert.That((await Ctl("volume", "create", "held", "--size", "64MiB")).ExitCode, Is.Zero);
        // qemu-io logs in, writes, and then holds the session open.
        using var qemu = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo(Tool.Require("qemu-io", "qemu-utils"))
        {
            ArgumentList = { "-f", "raw", "-c", "write -P 0x5a 0 1M", "-c", "sleep 120000", _daemon.IscsiUrl("held") },
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        })!;
        try
        {
            var client = await WaitForAsync(async () =>
            {
                var v = await CtlJson("volume", "inspect", "held");
                return v.GetProperty("clients").EnumerateArray().FirstOrDefault(c => c.GetProperty("bytesWritten").GetInt64() == 1 << 20);
            });
            Assert.That(client.GetProperty("protocol").GetString(), Is.EqualTo("iscsi"));
            Assert.That(client.GetProperty("initiator").GetString(), Does.StartWith("iqn.2008-11.org.linux-kvm"));
            Assert.That(client.GetProperty("target").GetString(), Is.EqualTo("iqn.2026-11.io.ballast:held"));
            Assert.That(await Metric("ballast_connections", null, "protocol", "iscsi"), Is.EqualTo(1));
            var list = await Ctl("export", "list");
            Assert.That(list.Stdout, Does.Match(@"(?m)^held\s+iscsi\s+iqn\.2026-11\.io\.ballast:held LUN 0\s+iscsi://127\.0\.0\.1:\d+/iqn\.2026-11\.io\.ballast:held/0\s+iqn\.2008-11\.org\.linux-kvm"), list.Stdout);

            var inUse = await Ctl("volume", "delete", "held");
            Assert.That(inUse.ExitCode, Is.EqualTo(4), inUse.ToString());
            Assert.That(inUse.Stderr, Does.Contain("1 connected client(s): iscsi iqn.2008-11.org.linux-kvm").And.Contain("--force"));

            var forced = await Ctl("volume", "delete", "held", "--force");
            Assert.That(forced.ExitCode, Is.Zero, forced.ToString());
            await _daemon.WaitForAsync("closing the session of iqn.2008-11.org.linux-kvm to iqn.2026-11.io.ballast:held", Limit);
            // qemu logs in again at once; the target is gone, so nothing stays connected.
            await WaitForAsync(async () => await Metric("ballast_connections", null, "protocol", "iscsi") == 0 ? (int?)1 : null);
            Assert.That((await Ctl("volume", "inspect", "held")).ExitCode, Is.EqualTo(3));
        }
        finally
        {
            qemu.Kill();
            await qemu.WaitForExitAsync();
        }
    }

    /// <summary>Polls until <paramref name="probe"/> yields a value (ballastd sees clients a moment after they connect).</summary>
    private static async Task<T> WaitForAsync<T>(Func<Task<T?>> probe)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (true)
        {
            var v = await probe();
            if (v is not null && !(v is JsonElement e && e.ValueKind == JsonValueKind.Undefined))
            {
                return v;
            }
            if (DateTime.UtcNow > deadline)
            {
                Assert.Fail("the condition did not hold within 30 s");
            }
            await Task.Delay(200);
        }
    }

    [Test]
    public async Task Errors_say_what_is_wrong_and_exit_with_their_own_codes()
    {
        Assert.That((await Ctl("volume", "create", "dup", "--size", "1GiB")).ExitCode, Is.Zero);
        var dup = await Ctl("volume", "create", "dup", "--size", "1GiB");
        Assert.That(dup.ExitCode, Is.EqualTo(4));
        Assert.That(dup.Stderr, Does.Contain("already exists"));

        var badSize = await Ctl("volume", "create", "x", "--size", "huge");
        Assert.That(badSize.ExitCode, Is.EqualTo(2));
        Assert.That(badSize.Stderr, Does.Contain("is not a size"));
        var zero = await Ctl("volume", "create", "x", "--size", "0");
        Assert.That(zero.ExitCode, Is.EqualTo(2));
        Assert.That(zero.Stderr, Does.Contain("--size \"0\" is 0; a size must be more than 0"));

        var badName = await Ctl("volume", "create", "no/slash", "--size", "1GiB");
        Assert.That(badName.ExitCode, Is.EqualTo(6));
        Assert.That(badName.Stderr, Does.Contain("invalid name"));

        var missing = await Ctl("volume", "inspect", "ghost");
        Assert.That(missing.ExitCode, Is.EqualTo(3));
        Assert.That(missing.Stderr, Does.Contain("volume \"ghost\" not found; ballastctl volume list shows the volumes"));
        var missingSnapshot = await Ctl("snapshot", "delete", "dup@ghost");
        Assert.That(missingSnapshot.ExitCode, Is.EqualTo(3));
        Assert.That(missingSnapshot.Stderr, Does.Contain("snapshot \"dup@ghost\" not found"));

        // Thin volumes may be larger than the pool (2 GiB here); the operator is told, and it is created.
        var larger = await Ctl("volume", "create", "larger", "--size", "1TiB");
        Assert.That(larger.ExitCode, Is.Zero, larger.ToString());
        Assert.That(larger.Stderr, Does.Contain("note: larger (1 TiB) is larger than the space its pool has left").And.Contain("of 2 GiB"));
        var fits = await Ctl("volume", "create", "fits", "--size", "64MiB");
        Assert.That(fits.Stderr, Is.Empty, fits.ToString());
        // status sums what the volumes promise, which thin volumes let exceed the pool.
        var status = await CtlJson("status");
        var listed = await CtlJson("volume", "list");
        Assert.That(status.GetProperty("provisioned").GetInt64(), Is.EqualTo(listed.EnumerateArray().Sum(v => v.GetProperty("size").GetInt64())));
        Assert.That(status.GetProperty("provisioned").GetInt64(), Is.GreaterThan(1L << 40));
        var human = await Ctl("status");
        Assert.That(human.Stdout, Does.Match(@"(?m)^volumes\s+\d+ \(\d+ snapshots\), 1(\.\d+)? TiB provisioned \(\d+(\.\d+)?x capacity\)"), human.Stdout);
        Assert.That((await Ctl("volume", "delete", "larger")).ExitCode, Is.Zero);
        Assert.That((await Ctl("volume", "delete", "fits")).ExitCode, Is.Zero);

        var (c, _, _) = await OpenAsync(_daemon.Endpoint, "dup");
        await using (c)
        {
            var inUse = await Ctl("volume", "delete", "dup");
            Assert.That(inUse.ExitCode, Is.EqualTo(4));
            Assert.That(inUse.Stderr, Does.Contain("connected client").And.Contain("--force"));
            var forced = await Ctl("volume", "delete", "dup", "--force");
            Assert.That(forced.ExitCode, Is.Zero, forced.ToString());
            Assert.That(await c.IsClosedAsync(TimeSpan.FromSeconds(10)), Is.True, "the client was disconnected");
        }

        // A snapshot's client blocks its volume's delete, and the message says it is the snapshot's.
        Assert.That((await Ctl("volume", "create", "snapped", "--size", "64MiB")).ExitCode, Is.Zero);
        Assert.That((await Ctl("snapshot", "create", "snapped", "s1")).ExitCode, Is.Zero);
        var (sc, _, _) = await OpenAsync(_daemon.Endpoint, "snapped@s1");
        await using (sc)
        {
            var blocked = await Ctl("volume", "delete", "snapped", "--force");
            Assert.That(blocked.ExitCode, Is.Zero, "--force disconnects the snapshot's client too");
        }
        Assert.That((await Ctl("volume", "create", "snapped2", "--size", "64MiB")).ExitCode, Is.Zero);
        Assert.That((await Ctl("snapshot", "create", "snapped2", "s1")).ExitCode, Is.Zero);
        var (sc2, _, _) = await OpenAsync(_daemon.Endpoint, "snapped2@s1");
        await using (sc2)
        {
            var blocked = await Ctl("volume", "delete", "snapped2");
            Assert.That(blocked.ExitCode, Is.EqualTo(4));
            Assert.That(blocked.Stderr, Does.Contain("snapped2's snapshots have 1 connected client(s)").And.Contain("on snapshot snapped2@s1"));
        }

        // What the engine's argument checks say reaches the operator without .NET's decorations.
        var badBlock = await Ctl("volume", "create", "bb", "--size", "64MiB", "--block-size", "1000");
        Assert.That(badBlock.ExitCode, Is.EqualTo(6));
        Assert.That(badBlock.Stderr, Does.Contain("512 or 4096").And.Not.Contain("Parameter").And.Not.Contain("Actual value"));

        var unreachable = await Tool.RunAsync("dotnet", [Path.Combine(AppContext.BaseDirectory, "ballastctl.dll"), "--socket", "/nonexistent/api.sock", "status"], Limit);
        Assert.That(unreachable.ExitCode, Is.EqualTo(5));
        Assert.That(unreachable.Stderr, Does.Contain("cannot reach ballastd"));

        var usage = await Ctl("volume", "frobnicate");
        Assert.That(usage.ExitCode, Is.EqualTo(2));
        Assert.That(usage.Stderr, Does.Contain("ballastctl volume --help shows its commands"));
        var noSize = await Ctl("volume", "create", "x");
        Assert.That(noSize.ExitCode, Is.EqualTo(2));
        Assert.That(noSize.Stderr, Does.Contain("'--size' is required").And.Contain("ballastctl volume create --help shows its options"));
    }

    [Test]
    public async Task Defragment_rewrites_a_volume_fio_wrote_at_random_into_few_runs_and_nbdcopy_reads_the_same_bytes()
    {
        Assert.That((await Ctl("volume", "create", "scattered", "--size", "64MiB")).ExitCode, Is.Zero);
        var uri = $"nbd://127.0.0.1:{_daemon.Port}/scattered";
        // Every 4 KiB block written once, in random order: one run per block on the device.
        var fio = await Tool.RunAsync(Tool.Require("fio", "fio"), [
            "--name=scatter", "--ioengine=nbd", $"--uri={uri}", "--rw=randwrite", "--bs=4k", "--iodepth=16", "--size=64M",
            "--randrepeat=0", "--refill_buffers", "--end_fsync=1"], Limit);
        Assert.That(fio.ExitCode, Is.Zero, fio.ToString());
        var before = Path.Combine(_dir, "before.img");
        var after = Path.Combine(_dir, "after.img");
        await Tool.RunOkAsync(Tool.Require("nbdcopy", "libnbd-bin"), [uri, before], Limit);
        var runsBefore = (await CtlJson("volume", "inspect", "scattered")).GetProperty("usage").GetProperty("dataRuns").GetInt64();
        Assert.That(runsBefore, Is.GreaterThan(10_000));

        var d = await CtlJson("volume", "defragment", "scattered");

        Assert.That(d.GetProperty("windowsScanned").GetInt64(), Is.EqualTo(16), "64 MiB in windows of 4 MiB");
        Assert.That(d.GetProperty("windowsMoved").GetInt64(), Is.EqualTo(16));
        Assert.That(d.GetProperty("bytesMoved").GetInt64(), Is.EqualTo(64L << 20));
        Assert.That(d.GetProperty("runsBefore").GetInt64(), Is.EqualTo(runsBefore));
        // 8 MiB segments and 4 MiB batches: a handful of runs per window at most.
        var runsAfter = d.GetProperty("runsAfter").GetInt64();
        Assert.That(runsAfter, Is.LessThanOrEqualTo(64));
        Assert.That(d.GetProperty("stopped").ValueKind, Is.EqualTo(JsonValueKind.Null));
        Assert.That((await CtlJson("volume", "inspect", "scattered")).GetProperty("usage").GetProperty("dataRuns").GetInt64(), Is.EqualTo(runsAfter));
        await Tool.RunOkAsync("nbdcopy", [uri, after], Limit);
        Assert.That(await File.ReadAllBytesAsync(after), Is.EqualTo(await File.ReadAllBytesAsync(before)), "the volume reads the same bytes");

        var again = await Ctl("volume", "defragment", "scattered", "--rate", "100MiB");
        Assert.That(again.ExitCode, Is.Zero, again.ToString());
        Assert.That(again.Stdout, Does.Contain("rewrote 0 of 16 windows"));
        var badRate = await Ctl("volume", "defragment", "scattered", "--rate", "0");
        Assert.That(badRate.ExitCode, Is.Not.Zero);
        Assert.That(badRate.Stderr, Does.Contain("--rate"));
        var missing = await Ctl("volume", "defragment", "ghost");
        Assert.That(missing.ExitCode, Is.EqualTo(3));
        Assert.That(missing.Stderr, Does.Contain("\"ghost\" not found"));
        Assert.That((await Ctl("volume", "delete", "scattered")).ExitCode, Is.Zero);
    }

    [Test]
    public async Task Metrics_count_exactly_the_io_that_was_done()
    {
        Assert.That((await Ctl("volume", "create", "metered", "--size", "64MiB")).ExitCode, Is.Zero);
        var before = await Metric("ballast_volume_write_bytes_total", "metered");
        var (c, _, _) = await OpenAsync(_daemon.Endpoint, "metered");
        await using (c)
        {
            for (var i = 0; i < 100; i++)
            {
                await c.SendRequestAsync(0, CmdWrite, (ulong)i, (ulong)i * 4096, 4096, new byte[4096]);
                Assert.That((await c.ReadSimpleReplyAsync()).Error, Is.Zero);
            }
            await c.SendRequestAsync(0, CmdFlush, 999, 0, 0);
            await c.ReadSimpleReplyAsync();
            Assert.That(await Metric("ballast_connections", null, "protocol", "nbd"), Is.GreaterThanOrEqualTo(1));
        }
        Assert.That(await Metric("ballast_volume_write_bytes_total", "metered") - before, Is.EqualTo(409600));
        Assert.That(await Metric("ballast_volume_writes_total", "metered"), Is.EqualTo(100));
        Assert.That(await Metric("ballast_volume_flushes_total", "metered"), Is.EqualTo(1));
        Assert.That(await Metric("ballast_volume_request_duration_seconds_count", "metered", "op", "write"), Is.EqualTo(100), "every write lands in the histogram");
        Assert.That(await Metric("ballast_pool_capacity_bytes", null), Is.EqualTo(2L << 30));
        // The log's writer time: 100 writes took some, the writes are part of it, and the flush synced.
        var busy = await Metric("ballast_pool_appender_busy_seconds_total", null);
        var writing = await Metric("ballast_pool_log_write_seconds_total", null);
        Assert.That(busy, Is.GreaterThan(0).And.LessThan(60));
        Assert.That(writing, Is.GreaterThan(0).And.LessThanOrEqualTo(busy));
        Assert.That(await Metric("ballast_pool_sync_seconds_total", null), Is.GreaterThan(0));
        var text = await Tool.RunOkAsync("curl", ["-s", "--unix-socket", _daemon.ApiSocket, "http://ballastd/metrics"], Limit);
        Assert.That(text.Stdout, Does.Contain("# TYPE ballast_volume_request_duration_seconds histogram"));
        Assert.That(text.Stdout, Does.Contain("ballast_volume_request_duration_seconds_bucket{volume=\"metered\",op=\"write\",le=\"+Inf\"} 100"));
        Assert.That(text.Stdout, Does.Contain("process_resident_memory_bytes"));
    }

    /// <summary>One value from /metrics.json, by volume and optionally one more label.</summary>
    private async Task<double> Metric(string name, string? volume, string? label = null, string? value = null)
    {
        var r = await Tool.RunOkAsync("curl", ["-s", "--unix-socket", _daemon.ApiSocket, "http://ballastd/metrics.json"], Limit);
        using var doc = JsonDocument.Parse(r.Stdout);
        foreach (var p in doc.RootElement.GetProperty(name).EnumerateArray())
        {
            var labels = p.GetProperty("labels");
            if (volume != null && (!labels.TryGetProperty("volume", out var v) || v.GetString() != volume))
            {
                continue;
            }
            if (label != null && (!labels.TryGetProperty(label, out var l) || l.GetString() != value))
            {
                continue;
            }
            return p.GetProperty("value").GetDouble();
        }
        Assert.Fail($"no {name} for volume {volume} {label}={value}:\n{r.Stdout[..Math.Min(2000, r.Stdout.Length)]}");
        return 0;
    }
}
