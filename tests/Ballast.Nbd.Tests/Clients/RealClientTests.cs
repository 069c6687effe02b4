using System.Text.Json;
using Ballast.Engine.Volumes;
using Ballast.Nbd.Tests.Support;
using Ballast.TestSupport;

namespace Ballast.Nbd.Tests.Clients;

/// <summary>Real NBD clients against the server: libnbd's tools, qemu, fio.</summary>
[CancelAfter(180_000)]
public class RealClientTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(120);
    private TestServer _server = null!;
    private string _dir = null!;

    [SetUp]
    public async Task SetUp()
    {
        _server = await TestServer.StartAsync();
        _dir = Path.Combine(Path.GetTempPath(), "ballast-nbd-files-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(_dir);
    }

    [TearDown]
    public async Task TearDown()
    {
        await _server.DisposeAsync();
        Directory.Delete(_dir, recursive: true);
    }

    private string RandomFile(string name, int bytes, int seed)
    {
        var path = Path.Combine(_dir, name);
        var b = new byte[bytes];
        new Random(seed).NextBytes(b);
        // Leave some zero runs so sparse handling is exercised too.
        Array.Clear(b, bytes / 4, bytes / 8);
        File.WriteAllBytes(path, b);
        return path;
    }

    [Test]
    public async Task Nbdinfo_json_reports_size_and_every_capability()
    {
        var nbdinfo = Tool.Require("nbdinfo", "libnbd-bin");
        var r = await Tool.RunOkAsync(nbdinfo, ["--json", _server.Uri("v1")], Limit);
        using var doc = JsonDocument.Parse(r.Stdout);
        var e = doc.RootElement.GetProperty("exports")[0];
        Assert.That(e.GetProperty("export-size").GetInt64(), Is.EqualTo(64L << 20));
        foreach (var cap in new[] { "can_fua", "can_trim", "can_zero", "can_fast_zero", "can_multi_conn", "can_cache", "can_flush", "can_df" })
        {
            Assert.That(e.GetProperty(cap).GetBoolean(), Is.True, cap);
        }
        Assert.That(e.GetProperty("is_read_only").GetBoolean(), Is.False);
        Assert.That(e.GetProperty("block_size_maximum").GetInt64(), Is.EqualTo(32L << 20));
        Assert.That(doc.RootElement.GetProperty("structured").GetBoolean(), Is.True);

        var snap = await Tool.RunOkAsync(nbdinfo, ["--json", _server.Uri("v1@snap")], Limit);
        using var sdoc = JsonDocument.Parse(snap.Stdout);
        var s = sdoc.RootElement.GetProperty("exports")[0];
        Assert.That(s.GetProperty("is_read_only").GetBoolean(), Is.True);
        Assert.That(s.GetProperty("can_trim").GetBoolean(), Is.False);
    }

    [Test]
    public async Task Nbdinfo_on_an_unknown_export_fails_and_the_server_logs_it_once()
    {
        var r = await Tool.RunAsync(Tool.Require("nbdinfo", "libnbd-bin"), [_server.Uri("nosuch")], Limit);
        Assert.That(r.ExitCode, Is.Not.Zero, r.ToString());
        Assert.That(r.Stderr, Does.Contain("No such file or directory"), "NBD_REP_ERR_UNKNOWN, which libnbd reports as ENOENT");
        // The log line is written before the reply goes out.
        var lines = _server.Log.Lines.Where(l => l.Contains("refused: export \"nosuch\" not found", StringComparison.Ordinal)).ToList();
        Assert.That(lines, Has.Count.EqualTo(1), string.Join("\n", _server.Log.Lines));
        Assert.That(lines[0], Does.Contain("NBD_OPT_GO").Or.Contain("NBD_OPT_INFO"));
    }

    [Test]
    public async Task Nbdinfo_list_names_every_export()
    {
        var r = await Tool.RunOkAsync(Tool.Require("nbdinfo", "libnbd-bin"), ["--list", "--json", $"nbd://127.0.0.1:{_server.Port}"], Limit);
        using var doc = JsonDocument.Parse(r.Stdout);
        var names = doc.RootElement.GetProperty("exports").EnumerateArray().Select(e => e.GetProperty("export-name").GetString()).ToList();
        Assert.That(names, Is.EquivalentTo(new[] { "v1", "v1@snap", "v2" }));
    }

    [Test]
    public async Task Nbdinfo_map_shows_holes_after_a_trim()
    {
        var v = _server.Pool.OpenVolume("v2");
        await v.WriteAsync(0, Enumerable.Repeat((byte)1, 8 << 20).ToArray(), WriteFlags.None);
        await v.TrimAsync(2 << 20, 1 << 20);
        var r = await Tool.RunOkAsync(Tool.Require("nbdinfo", "libnbd-bin"), ["--map", "--json", _server.Uri("v2")], Limit);
        using var doc = JsonDocument.Parse(r.Stdout);
        var map = doc.RootElement.EnumerateArray().Select(e => (e.GetProperty("offset").GetInt64(), e.GetProperty("length").GetInt64(), e.GetProperty("type").GetInt32())).ToList();
        Assert.That(map, Is.EqualTo(new List<(long, long, int)>
        {
            (0, 2 << 20, 0),
            (2 << 20, 1 << 20, 3),
            (3 << 20, 5 << 20, 0),
            (8 << 20, 8 << 20, 3),
        }), r.Stdout);
    }

    [Test]
    public async Task Qemu_img_converts_in_and_out_and_compares_equal()
    {
        var qemuImg = Tool.Require("qemu-img", "qemu-utils");
        var src = RandomFile("src.img", 24 << 20, 7);
        await Tool.RunOkAsync(qemuImg, ["convert", "-n", "-f", "raw", "-O", "raw", "-W", "-m", "8", src, _server.Uri("v1")], Limit);
        var back = Path.Combine(_dir, "back.img");
        await Tool.RunOkAsync(qemuImg, ["convert", "-f", "raw", "-O", "raw", _server.Uri("v1"), back], Limit);
        Assert.That(new FileInfo(back).Length, Is.EqualTo(64L << 20));
        var expected = File.ReadAllBytes(src);
        var actual = File.ReadAllBytes(back);
        Assert.That(actual.AsSpan(0, expected.Length).SequenceEqual(expected), Is.True, "the first 24 MiB came back");
        Assert.That(actual.AsSpan(expected.Length).ContainsAnyExcept((byte)0), Is.False, "qemu-img zeroed the rest (convert -n writes the whole target)");
        var cmp = await Tool.RunAsync(qemuImg, ["compare", "-f", "raw", "-F", "raw", back, _server.Uri("v1")], Limit);
        Assert.That(cmp.ExitCode, Is.Zero, cmp.ToString());
        Assert.That(cmp.Stdout, Does.Contain("Images are identical"));
    }

    [Test]
    public async Task Qemu_io_writes_and_reads_patterns()
    {
        var qemuIo = Tool.Require("qemu-io", "qemu-utils");
        var r = await Tool.RunOkAsync(qemuIo, ["-f", "raw",
            "-c", "write -P 0xa5 1234 70000",
            "-c", "read -P 0xa5 1234 70000",
            "-c", "write -z 65536 65536",
            "-c", "read -P 0 65536 65536",
            "-c", "discard 131072 65536",
            "-c", "read -P 0 131072 65536",
            "-c", "aio_write -P 0x11 1048576 4096",
            "-c", "aio_flush",
            "-c", "read -P 0x11 1048576 4096",
            _server.Uri("v2")], Limit);
        Assert.That(r.Stdout, Does.Not.Contain("Pattern verification failed"));
        Assert.That(r.Stderr, Is.Empty);
    }

    [Test]
    public async Task Nbdcopy_round_trips_an_image()
    {
        var nbdcopy = Tool.Require("nbdcopy", "libnbd-bin");
        var src = RandomFile("src.img", 16 << 20, 11);
        var borrowed = _server.Pool.GetStats().BorrowedBytes;
        await Tool.RunOkAsync(nbdcopy, ["--connections=4", src, _server.Uri("v2")], Limit);
        // nbdcopy writes in 256 KiB requests: the receive loop takes each into an aligned buffer
        // and the log writes it from there (14 MiB of the file is data, the rest a zero run).
        borrowed = _server.Pool.GetStats().BorrowedBytes - borrowed;
        Assert.That(borrowed, Is.GreaterThanOrEqualTo(12L << 20), $"{borrowed} bytes of large writes were written from their receive buffers");
        var back = Path.Combine(_dir, "back.img");
        await Tool.RunOkAsync(nbdcopy, [_server.Uri("v2"), back], Limit);
        Assert.That(File.ReadAllBytes(back), Is.EqualTo(File.ReadAllBytes(src)));
    }

    [Test]
    public async Task Fio_random_writes_verify_across_several_connections()
    {
        var fio = Tool.Require("fio", "fio");
        var r = await Tool.RunOkAsync(fio, [
            "--name=verify", "--ioengine=nbd", $"--uri={_server.Uri("v1")}", "--rw=randwrite", "--bs=4k", "--iodepth=16",
            "--numjobs=3", "--size=16M", "--offset_increment=20M", "--verify=crc32c", "--verify_fatal=1", "--do_verify=1",
            "--group_reporting", "--output-format=json"], Limit);
        using var doc = JsonDocument.Parse(r.Stdout[r.Stdout.IndexOf('{')..]);
        var job = doc.RootElement.GetProperty("jobs")[0];
        Assert.That(job.GetProperty("error").GetInt32(), Is.Zero);
        Assert.That(job.GetProperty("write").GetProperty("io_bytes").GetInt64(), Is.EqualTo(3 * (16L << 20)));
        Assert.That(job.GetProperty("read").GetProperty("io_bytes").GetInt64(), Is.EqualTo(3 * (16L << 20)), "every block verified");
    }

    [Test]
    public async Task Fio_at_queue_depth_1_writes_alone_on_the_receive_loop_acknowledged_before_the_device_write()
    {
        // At queue depth 1 the receive loop writes each request itself (WriteFlags.Alone). The
        // opposite case, requests that arrive together, is TransmissionTests' burst test: what
        // fio at depth 32 puts on the wire together depends on how loaded the machine is.
        var fio = Tool.Require("fio", "fio");
        var before = _server.Pool.GetStats().InlineBatches;
        var earlyBefore = _server.Pool.GetStats().EarlyAcks;
        var r = await Tool.RunOkAsync(fio, [
            "--name=depth", "--ioengine=nbd", $"--uri={_server.Uri("v1")}", "--rw=randwrite", "--bs=4k", "--iodepth=1",
            "--size=16M", "--number_ios=400", "--verify=crc32c", "--verify_fatal=1", "--do_verify=1", "--output-format=json"], Limit);
        using var doc = JsonDocument.Parse(r.Stdout[r.Stdout.IndexOf('{')..]);
        Assert.That(doc.RootElement.GetProperty("jobs")[0].GetProperty("error").GetInt32(), Is.Zero);
        var alone = _server.Pool.GetStats().InlineBatches - before;
        var early = _server.Pool.GetStats().EarlyAcks - earlyBefore;
        // Loose (a checkpoint or a segment change sends a few to the appender): never writing
        // alone gives 0. Those written alone were acknowledged before their device write, and
        // fio's verify pass read every block back.
        Assert.That(alone, Is.GreaterThanOrEqualTo(200), $"of 400 writes at depth 1, {alone} were written on the receive loop");
        Assert.That(early, Is.EqualTo(alone), $"of {alone} writes written on the receive loop, {early} were acknowledged before their device write");
    }

    private Task<Tool.Result> NbdshAsync(string script) =>
        Tool.RunAsync("/usr/bin/python3", ["-m", "nbd", "-c", script.Replace("PORT", _server.Port.ToString(System.Globalization.CultureInfo.InvariantCulture))], Limit);

    [Test]
    public async Task Nbdsh_walks_the_options_in_their_order_and_sees_errors_replied()
    {
        Tool.Require("nbdsh", "python3-libnbd");
        var r = await NbdshAsync("""
            import nbd, errno
            h.set_opt_mode(True)
            h.add_meta_context("base:allocation")
            h.connect_tcp("127.0.0.1", "PORT")
            names = []
            h.opt_list(lambda name, desc: names.append(name))
            assert sorted(names) == ["v1", "v1@snap", "v2"], names
            ctx = []
            h.set_export_name("v1")
            h.opt_list_meta_context(lambda name: ctx.append(name))
            assert ctx == ["base:allocation"], ctx
            h.set_export_name("missing")
            try:
                h.opt_info()
                raise AssertionError("info on a missing export succeeded")
            except nbd.Error as e:
                assert e.errnum == errno.ENOENT, e
            h.set_export_name("v1")
            h.opt_info()
            assert h.get_size() == 64 << 20
            h.opt_go()
            assert h.can_meta_context("base:allocation")
            assert h.get_structured_replies_negotiated()
            h.pwrite(b"\x42" * 4096, 8192, nbd.CMD_FLAG_FUA)
            assert h.pread(4096, 8192) == b"\x42" * 4096
            # Let out-of-range requests reach the server instead of libnbd refusing them itself.
            h.set_strict_mode(0)
            for call in (lambda: h.pread(4096, 64 << 20), lambda: h.trim(4096, 64 << 20)):
                try:
                    call()
                    raise AssertionError("a request beyond the end succeeded")
                except nbd.Error as e:
                    assert e.errnum == errno.EINVAL, e
            try:
                h.pwrite(b"x" * 4096, 64 << 20)
                raise AssertionError("a write beyond the end succeeded")
            except nbd.Error as e:
                assert e.errnum == errno.ENOSPC, e
            seen = []
            h.block_status(2 << 20, 0, lambda meta, off, entries, err: seen.append((meta, entries)))
            assert seen[0][0] == "base:allocation", seen
            assert seen[0][1][0:2] == [1 << 20, 0], seen
            h.shutdown()
            print("ok")
            """);
        Assert.That(r.ExitCode, Is.Zero, r.ToString());
        Assert.That(r.Stdout.Trim(), Is.EqualTo("ok"));
    }

    [Test]
    public async Task Nbdsh_sees_EPERM_on_a_read_only_snapshot()
    {
        Tool.Require("nbdsh", "python3-libnbd");
        var r = await NbdshAsync("""
            import nbd, errno
            h.connect_uri("nbd://127.0.0.1:PORT/v1@snap")
            assert h.is_read_only()
            assert h.pread(4, 0) == b"\x5a" * 4
            try:
                h.pwrite(b"x", 0)
                raise AssertionError("write to a snapshot succeeded")
            except nbd.Error as e:
                assert e.errnum in (errno.EPERM, errno.EINVAL), e
            print("ok")
            """);
        Assert.That(r.ExitCode, Is.Zero, r.ToString());
    }
}
