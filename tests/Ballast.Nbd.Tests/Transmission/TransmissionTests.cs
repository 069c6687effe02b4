using System.Buffers.Binary;
using Ballast.Nbd.Tests.Support;
using Ballast.TestSupport;
using static Ballast.TestSupport.NbdRawClient;

namespace Ballast.Nbd.Tests.Transmission;

/// <summary>Every command of the transmission phase, its errors, and pipelining.</summary>
[CancelAfter(60_000)]
public class TransmissionTests
{
    private TestServer _server = null!;

    [SetUp]
    public async Task SetUp() => _server = await TestServer.StartAsync();

    [TearDown]
    public async Task TearDown() => await _server.DisposeAsync();

    private static byte[] Pattern(int seed, int length)
    {
        var b = new byte[length];
        new Random(seed).NextBytes(b);
        return b;
    }

    private async Task<NbdRawClient> OpenAsync(string export = "v1", bool structured = false, bool meta = false) =>
        (await NbdRawClient.OpenAsync(_server.Endpoint, export, structured, meta)).Client;

    [Test]
    public async Task Written_data_reads_back_with_simple_replies()
    {
        await using var c = await OpenAsync();
        var data = Pattern(1, 12288);
        await c.SendRequestAsync(0, CmdWrite, 1, 8192, (uint)data.Length, data);
        Assert.That((await c.ReadSimpleReplyAsync()).Error, Is.Zero);
        await c.SendRequestAsync(0, CmdRead, 2, 8192, (uint)data.Length);
        var r = await c.ReadSimpleReplyAsync(data.Length);
        Assert.That((r.Error, r.Cookie), Is.EqualTo((0u, 2UL)));
        Assert.That(r.Data, Is.EqualTo(data));
    }

    [Test]
    public async Task Unaligned_writes_and_reads_are_exact()
    {
        await using var c = await OpenAsync();
        var data = Pattern(2, 1000);
        await c.SendRequestAsync(FlagFua, CmdWrite, 1, 4095, (uint)data.Length, data);
        Assert.That((await c.ReadSimpleReplyAsync()).Error, Is.Zero);
        await c.SendRequestAsync(0, CmdRead, 2, 4094, 1002);
        var r = await c.ReadSimpleReplyAsync(1002);
        Assert.That(r.Data[0], Is.EqualTo(0x5a), "byte before the write keeps the old data");
        Assert.That(r.Data[1..1001], Is.EqualTo(data));
        Assert.That(r.Data[1001], Is.EqualTo(0x5a), "byte after the write keeps the old data");
    }

    [Test]
    public async Task A_structured_read_sends_holes_as_hole_chunks_and_data_as_data_chunks()
    {
        await using var c = await OpenAsync(structured: true);
        // v1 has data in its first MiB only; read 4 KiB of data and 12 KiB of hole across the edge.
        await c.SendRequestAsync(0, CmdRead, 9, (1 << 20) - 4096, 16384);
        var chunks = new List<Reply>();
        Reply r;
        do
        {
            r = await c.ReadReplyAsync();
            Assert.That(r.Cookie, Is.EqualTo(9UL));
            chunks.Add(r);
        }
        while (!r.Done);
        Assert.That(chunks.Select(x => x.Type), Is.EqualTo(new ushort[] { 1, 2 }), "OFFSET_DATA then OFFSET_HOLE");
        Assert.That(BinaryPrimitives.ReadUInt64BigEndian(chunks[0].Payload), Is.EqualTo((1UL << 20) - 4096));
        Assert.That(chunks[0].Payload.Length, Is.EqualTo(8 + 4096));
        Assert.That(chunks[0].Payload.AsSpan(8).ToArray(), Is.All.EqualTo(0x5a));
        Assert.That(BinaryPrimitives.ReadUInt64BigEndian(chunks[1].Payload), Is.EqualTo(1UL << 20));
        Assert.That(BinaryPrimitives.ReadUInt32BigEndian(chunks[1].Payload.AsSpan(8)), Is.EqualTo(12288));
    }

    [Test]
    public async Task A_read_of_a_hole_is_one_hole_chunk_and_DF_forces_one_data_chunk()
    {
        await using var c = await OpenAsync(structured: true);
        await c.SendRequestAsync(0, CmdRead, 1, 32 << 20, 65536);
        var hole = await c.ReadReplyAsync();
        Assert.That((hole.Type, hole.Done), Is.EqualTo(((ushort)2, true)));
        Assert.That(BinaryPrimitives.ReadUInt32BigEndian(hole.Payload.AsSpan(8)), Is.EqualTo(65536));

        await c.SendRequestAsync(FlagDf, CmdRead, 2, (1 << 20) - 4096, 16384);
        var data = await c.ReadReplyAsync();
        Assert.That((data.Type, data.Done), Is.EqualTo(((ushort)1, true)));
        Assert.That(data.Payload.Length, Is.EqualTo(8 + 16384));
        Assert.That(data.Payload.AsSpan(8 + 4096).ContainsAnyExcept((byte)0), Is.False, "the hole part is zeroes");
    }

    [TestCase(CmdRead, EInval)]
    [TestCase(CmdWrite, ENoSpc)]
    [TestCase(CmdTrim, EInval)]
    [TestCase(CmdWriteZeroes, ENoSpc)]
    [TestCase(CmdCache, EInval)]
    public async Task A_request_beyond_the_end_gets_the_spec_error(ushort command, uint error)
    {
        await using var c = await OpenAsync();
        var payload = command == CmdWrite ? new byte[8192] : null;
        await c.SendRequestAsync(0, command, 1, (64 << 20) - 4096, 8192, payload);
        Assert.That((await c.ReadSimpleReplyAsync()).Error, Is.EqualTo(error));
        // An offset+length that wraps around 2^64 is beyond the end too, not a small range.
        await c.SendRequestAsync(0, command, 2, ulong.MaxValue - 4095, 8192, payload);
        Assert.That((await c.ReadSimpleReplyAsync()).Error, Is.EqualTo(error));
        // The connection is still good.
        await c.SendRequestAsync(0, CmdFlush, 3, 0, 0);
        Assert.That((await c.ReadSimpleReplyAsync()).Error, Is.Zero);
    }

    [Test]
    public async Task Errors_in_structured_mode_are_error_chunks_with_a_message()
    {
        await using var c = await OpenAsync(structured: true);
        await c.SendRequestAsync(0, CmdRead, 4, 1UL << 40, 4096);
        var r = await c.ReadReplyAsync();
        Assert.That((r.Type, r.Error, r.Done), Is.EqualTo(((ushort)0x8001, EInval, true)));
        var msgLen = BinaryPrimitives.ReadUInt16BigEndian(r.Payload.AsSpan(4));
        Assert.That(System.Text.Encoding.UTF8.GetString(r.Payload, 6, msgLen), Does.Contain("beyond the end"));
    }

    [Test]
    public async Task Writes_and_trims_to_a_read_only_snapshot_are_EPERM()
    {
        await using var c = await OpenAsync("v1@snap");
        await c.SendRequestAsync(0, CmdWrite, 1, 0, 4096, new byte[4096]);
        Assert.That((await c.ReadSimpleReplyAsync()).Error, Is.EqualTo(EPerm));
        await c.SendRequestAsync(0, CmdTrim, 2, 0, 4096);
        Assert.That((await c.ReadSimpleReplyAsync()).Error, Is.EqualTo(EPerm));
        await c.SendRequestAsync(0, CmdWriteZeroes, 3, 0, 4096);
        Assert.That((await c.ReadSimpleReplyAsync()).Error, Is.EqualTo(EPerm));
        await c.SendRequestAsync(0, CmdRead, 4, 0, 4096);
        Assert.That((await c.ReadSimpleReplyAsync(4096)).Data, Is.All.EqualTo(0x5a));
    }

    [Test]
    public async Task Flags_a_command_does_not_take_and_unknown_commands_are_EINVAL()
    {
        await using var c = await OpenAsync();
        await c.SendRequestAsync(FlagNoHole, CmdRead, 1, 0, 4096);
        Assert.That((await c.ReadSimpleReplyAsync()).Error, Is.EqualTo(EInval));
        await c.SendRequestAsync(FlagDf, CmdRead, 2, 0, 4096);
        Assert.That((await c.ReadSimpleReplyAsync()).Error, Is.EqualTo(EInval), "DF needs structured replies");
        await c.SendRequestAsync(0x4000, CmdFlush, 3, 0, 0);
        Assert.That((await c.ReadSimpleReplyAsync()).Error, Is.EqualTo(EInval));
        await c.SendRequestAsync(0, 42, 4, 0, 0);
        Assert.That((await c.ReadSimpleReplyAsync()).Error, Is.EqualTo(EInval));
        await c.SendRequestAsync(0, CmdFlush, 5, 4096, 0);
        Assert.That((await c.ReadSimpleReplyAsync()).Error, Is.EqualTo(EInval), "FLUSH with an offset");
    }

    [Test]
    public async Task A_write_payload_above_the_maximum_closes_the_connection_and_others_go_on()
    {
        await using var other = await OpenAsync("v2");
        await using var c = await OpenAsync();
        await c.SendRequestAsync(0, CmdWrite, 1, 0, 64u << 20);
        Assert.That(await c.IsClosedAsync(TimeSpan.FromSeconds(5)), Is.True);
        await other.SendRequestAsync(0, CmdRead, 1, 0, 512);
        Assert.That((await other.ReadSimpleReplyAsync(512)).Error, Is.Zero);
    }

    [Test]
    public async Task A_read_above_the_maximum_is_EINVAL()
    {
        await using var c = await OpenAsync();
        await c.SendRequestAsync(0, CmdRead, 1, 0, 33u << 20);
        Assert.That((await c.ReadSimpleReplyAsync()).Error, Is.EqualTo(EInval));
    }

    [Test]
    public async Task A_bad_request_magic_closes_the_connection()
    {
        await using var c = await OpenAsync();
        await c.SendRequestAsync(0, CmdFlush, 1, 0, 0, magic: 0xdeadbeef);
        Assert.That(await c.IsClosedAsync(TimeSpan.FromSeconds(5)), Is.True);
    }

    [Test]
    public async Task Block_status_without_a_selected_context_is_EINVAL()
    {
        await using var c = await OpenAsync(structured: true);
        await c.SendRequestAsync(0, CmdBlockStatus, 1, 0, 4096);
        var r = await c.ReadReplyAsync();
        Assert.That(r.Error, Is.EqualTo(EInval));
    }

    private static List<(uint Length, uint Flags)> Descriptors(Reply r)
    {
        Assert.That(r.Type, Is.EqualTo(5), "BLOCK_STATUS chunk");
        var list = new List<(uint, uint)>();
        for (var i = 4; i < r.Payload.Length; i += 8)
        {
            list.Add((BinaryPrimitives.ReadUInt32BigEndian(r.Payload.AsSpan(i)), BinaryPrimitives.ReadUInt32BigEndian(r.Payload.AsSpan(i + 4))));
        }
        return list;
    }

    [Test]
    public async Task Block_status_reports_data_zero_and_hole()
    {
        await using var c = await OpenAsync(structured: true, meta: true);
        // [0,1M) data from setup; [1M,1M+64K) zeroes that keep their blocks; the rest a hole.
        await c.SendRequestAsync(FlagNoHole, CmdWriteZeroes, 1, 1 << 20, 65536);
        Assert.That((await c.ReadReplyAsync()).Error, Is.Zero);
        await c.SendRequestAsync(0, CmdBlockStatus, 2, 0, 4 << 20);
        var d = Descriptors(await c.ReadReplyAsync());
        Assert.That(d, Is.EqualTo(new List<(uint, uint)> { (1u << 20, 0u), (65536u, 2u), ((4u << 20) - (1u << 20) - 65536u, 3u) }));

        await c.SendRequestAsync(FlagReqOne, CmdBlockStatus, 3, 4096, 4 << 20);
        var one = Descriptors(await c.ReadReplyAsync());
        Assert.That(one, Has.Count.EqualTo(1));
        Assert.That(one[0], Is.EqualTo(((1u << 20) - 4096u, 0u)));
    }

    [Test]
    public async Task Trim_and_write_zeroes_read_back_as_zeroes_and_leave_holes()
    {
        await using var c = await OpenAsync(structured: true, meta: true);
        await c.SendRequestAsync(FlagFua, CmdTrim, 1, 0, 65536);
        Assert.That((await c.ReadReplyAsync()).Error, Is.Zero);
        await c.SendRequestAsync(FlagFastZero, CmdWriteZeroes, 2, 65536, 65536);
        Assert.That((await c.ReadReplyAsync()).Error, Is.Zero, "fast zero always succeeds here");
        await c.SendRequestAsync(0, CmdBlockStatus, 3, 0, 131072);
        Assert.That(Descriptors(await c.ReadReplyAsync())[0], Is.EqualTo((131072u, 3u)));
        await c.SendRequestAsync(FlagDf, CmdRead, 4, 0, 131072);
        var r = await c.ReadReplyAsync();
        Assert.That(r.Payload.AsSpan(8).ContainsAnyExcept((byte)0), Is.False);
    }

    [Test]
    public async Task Cache_succeeds_within_the_export()
    {
        await using var c = await OpenAsync();
        await c.SendRequestAsync(0, CmdCache, 1, 0, 1 << 20);
        Assert.That((await c.ReadSimpleReplyAsync()).Error, Is.Zero);
    }

    [Test]
    public async Task Many_pipelined_requests_on_one_connection_all_get_their_replies()
    {
        await using var c = await OpenAsync();
        const int n = 300;
        var datas = new Dictionary<ulong, byte[]>();
        for (var i = 0; i < n; i++)
        {
            var d = Pattern(i, 4096);
            datas[(ulong)i] = d;
            await c.SendRequestAsync(0, CmdWrite, (ulong)i, (ulong)i * 4096, 4096, d);
        }
        var seen = new HashSet<ulong>();
        for (var i = 0; i < n; i++)
        {
            var r = await c.ReadSimpleReplyAsync();
            Assert.That(r.Error, Is.Zero);
            Assert.That(seen.Add(r.Cookie), Is.True, "each cookie answered once");
        }
        Assert.That(seen, Has.Count.EqualTo(n));
        for (var i = 0; i < n; i++)
        {
            await c.SendRequestAsync(0, CmdRead, 1000UL + (ulong)i, (ulong)i * 4096, 4096);
        }
        for (var i = 0; i < n; i++)
        {
            // Simple read replies carry no length: the client matches by cookie, and every reply is 4096 bytes here.
            var r = await c.ReadSimpleReplyAsync(4096);
            Assert.That(r.Data, Is.EqualTo(datas[r.Cookie - 1000]));
        }
    }

    [Test]
    public async Task Disc_finishes_outstanding_requests_before_closing()
    {
        await using var c = await OpenAsync();
        for (var i = 0; i < 20; i++)
        {
            await c.SendRequestAsync(FlagFua, CmdWrite, (ulong)i, (ulong)i * 65536, 65536, Pattern(i, 65536));
        }
        await c.SendRequestAsync(0, CmdDisc, 99, 0, 0);
        for (var i = 0; i < 20; i++)
        {
            Assert.That((await c.ReadSimpleReplyAsync()).Error, Is.Zero);
        }
        Assert.That(await c.IsClosedAsync(TimeSpan.FromSeconds(5)), Is.True);
        var back = new byte[65536];
        await _server.Pool.OpenVolume("v1").ReadAsync(19 * 65536, back);
        Assert.That(back, Is.EqualTo(Pattern(19, 65536)));
    }

    [Test]
    public async Task A_write_completed_on_one_connection_is_visible_and_flushed_through_another()
    {
        await using var a = await OpenAsync();
        await using var b = await OpenAsync();
        var data = Pattern(5, 4096);
        await a.SendRequestAsync(0, CmdWrite, 1, 40960, 4096, data);
        Assert.That((await a.ReadSimpleReplyAsync()).Error, Is.Zero);
        await b.SendRequestAsync(0, CmdFlush, 2, 0, 0);
        Assert.That((await b.ReadSimpleReplyAsync()).Error, Is.Zero);
        await b.SendRequestAsync(0, CmdRead, 3, 40960, 4096);
        Assert.That((await b.ReadSimpleReplyAsync(4096)).Data, Is.EqualTo(data));
    }

    [Test]
    public async Task A_client_that_disconnects_with_requests_in_flight_does_not_disturb_the_server()
    {
        for (var round = 0; round < 5; round++)
        {
            var c = await OpenAsync();
            for (var i = 0; i < 50; i++)
            {
                await c.SendRequestAsync(0, CmdWrite, (ulong)i, (ulong)i * 4096, 4096, Pattern(i, 4096));
                await c.SendRequestAsync(0, CmdRead, 1000 + (ulong)i, 0, 65536);
            }
            await c.DisposeAsync();
        }
        await using var ok = await OpenAsync("v2");
        await ok.SendRequestAsync(0, CmdFlush, 1, 0, 0);
        Assert.That((await ok.ReadSimpleReplyAsync()).Error, Is.Zero);
    }

    [Test]
    public async Task Writes_that_arrive_together_go_to_the_log_writer_and_a_lone_write_is_written_on_the_receive_loop()
    {
        // The receive loop writes a request itself (WriteFlags.Alone) only when nothing else is in
        // flight or buffered. Requests sent in one burst must reach the appender, whatever the
        // client's timing: fio's own depth says nothing about what arrives together on a loaded
        // machine, so the bursts here are single sends of 32 requests.
        await using var c = await OpenAsync();
        const int bursts = 50, depth = 32;
        var data = Pattern(7, 4096);
        var burst = new byte[depth * (28 + 4096)];
        long Inline() => _server.Pool.GetStats().InlineBatches;
        var before = Inline();
        for (var b = 0; b < bursts; b++)
        {
            for (var i = 0; i < depth; i++)
            {
                var h = burst.AsSpan(i * (28 + 4096));
                BinaryPrimitives.WriteUInt32BigEndian(h, RequestMagic);
                BinaryPrimitives.WriteUInt16BigEndian(h[4..], 0);
                BinaryPrimitives.WriteUInt16BigEndian(h[6..], CmdWrite);
                BinaryPrimitives.WriteUInt64BigEndian(h[8..], (ulong)i);
                BinaryPrimitives.WriteUInt64BigEndian(h[16..], (ulong)((b * depth + i) % 16384) * 4096);
                BinaryPrimitives.WriteUInt32BigEndian(h[24..], 4096);
                data.CopyTo(h[28..]);
            }
            await c.Stream.WriteAsync(burst);
            for (var i = 0; i < depth; i++)
            {
                Assert.That((await c.ReadSimpleReplyAsync()).Error, Is.Zero);
            }
        }
        var together = Inline() - before;
        before = Inline();
        for (var i = 0; i < 100; i++)
        {
            await c.SendRequestAsync(0, CmdWrite, (ulong)i, (ulong)i * 4096, 4096, data);
            Assert.That((await c.ReadSimpleReplyAsync()).Error, Is.Zero);
        }
        var lone = Inline() - before;
        TestContext.Out.WriteLine($"written on the receive loop: {together} of {bursts * depth} sent together, {lone} of 100 sent alone");
        // A burst reaches the server in one or a few reads; only the first request of a read that
        // finds the server idle can be alone. A checkpoint or a segment change sends a lone write
        // to the appender now and then.
        Assert.That(together, Is.LessThanOrEqualTo(2 * bursts), $"of {bursts * depth} writes sent {depth} at a time, {together} were written on the receive loop (alone: {lone} of 100)");
        Assert.That(lone, Is.GreaterThanOrEqualTo(50), $"of 100 writes sent one at a time, {lone} were written on the receive loop (together: {together} of {bursts * depth})");
        await c.SendRequestAsync(0, CmdRead, 1, 4096 * 5, 4096);
        Assert.That((await c.ReadSimpleReplyAsync(4096)).Data, Is.EqualTo(data));
    }
}
