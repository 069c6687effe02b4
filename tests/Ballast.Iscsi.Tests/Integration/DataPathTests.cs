using System.Buffers.Binary;
using Ballast.Iscsi.Tests.Support;
using static Ballast.Iscsi.Tests.Support.RawInitiator;

namespace Ballast.Iscsi.Tests.Integration;

/// <summary>The data path: many commands in flight, ordering rules, windowing, and allocation per I/O.</summary>
[NonParallelizable]
[CancelAfter(120_000)]
public class DataPathTests
{
    [Test]
    public async Task Many_commands_in_flight_complete_with_statsn_in_order_and_the_window_respected()
    {
        await using var f = await TargetFixture.StartAsync();
        await using var c = await f.LoginToNewVolumeAsync("pipe", 64L << 20, 512);
        var window = c.MaxCmdSn - c.CmdSn + 1;
        Assert.That(window, Is.EqualTo(128u), "CommandWindow default");
        const int N = 96;
        var payloads = new Dictionary<uint, byte[]>();
        for (var i = 0; i < N; i++)
        {
            var data = ScsiData(i);
            var h = c.WriteCommand(Cdb.Write10((uint)(i * 8), 8), data.Length);
            payloads[Get32(h, 16)] = data;
            await c.SendAsync(h, data);
        }
        var seen = new HashSet<uint>();
        uint? lastStatSn = null;
        uint maxCmdSn = 0;
        for (var i = 0; i < N; i++)
        {
            var r = await c.ReadAsync() ?? throw new IOException("connection lost");
            Assert.That(r.Header[0] & 0x3f, Is.EqualTo(0x21));
            Assert.That(r.Header[3], Is.Zero, "GOOD");
            Assert.That(seen.Add(Get32(r.Header, 16)), Is.True, "each task answered once");
            var statSn = Get32(r.Header, 24);
            if (lastStatSn is { } last)
            {
                Assert.That(statSn, Is.EqualTo(last + 1), "StatSN in order on the connection");
            }
            lastStatSn = statSn;
            var max = Get32(r.Header, 32);
            Assert.That(max, Is.GreaterThanOrEqualTo(maxCmdSn), "MaxCmdSN never shrinks");
            maxCmdSn = max;
        }
        Assert.That(seen, Is.EquivalentTo(payloads.Keys));
        Assert.That(maxCmdSn - c.CmdSn + 1, Is.EqualTo(128u), "every slot is free again");
        for (var i = 0; i < N; i += 7)
        {
            var r = await c.CommandAsync(Cdb.Read10((uint)(i * 8), 8), readLength: 4096);
            Assert.That(r!.Data, Is.EqualTo(ScsiData(i)));
        }
    }

    [Test]
    public async Task Writes_that_arrive_together_go_to_the_log_writer_and_a_lone_write_is_written_on_the_receive_loop()
    {
        // The receive loop writes a command itself (WriteFlags.Alone) only when nothing else is in
        // flight or buffered. Commands that arrive together must reach the appender, whatever the
        // initiator's timing: a tool's queue depth says nothing about what reaches the target
        // together on a loaded machine, so each burst here is one send of 32 commands.
        await using var f = await TargetFixture.StartAsync();
        await using var c = await f.LoginToNewVolumeAsync("burst", 64L << 20, 4096);
        const int bursts = 50, depth = 32;
        var data = new byte[4096];
        new Random(3).NextBytes(data);
        long Inline() => f.Pool.GetStats().InlineBatches;
        var before = Inline();
        for (var b = 0; b < bursts; b++)
        {
            var burst = new MemoryStream();
            for (var i = 0; i < depth; i++)
            {
                burst.Write(c.Pdu(c.WriteCommand(Cdb.Write10((uint)((b * depth + i) % 16384), 1), data.Length), data));
            }
            await c.SendRawAsync(burst.ToArray());
            for (var i = 0; i < depth; i++)
            {
                var r = await c.ReadAsync() ?? throw new IOException("connection lost");
                Assert.That((r.Header[0] & 0x3f, r.Header[3]), Is.EqualTo((0x21, (byte)0)), "a GOOD SCSI response");
            }
        }
        var together = Inline() - before;
        before = Inline();
        for (var i = 0; i < 100; i++)
        {
            var r = await c.CommandAsync(Cdb.Write10((uint)i, 1), writeData: data);
            Assert.That(r!.Status, Is.Zero);
        }
        var lone = Inline() - before;
        TestContext.Out.WriteLine($"written on the receive loop: {together} of {bursts * depth} sent together, {lone} of 100 sent alone");
        // A burst reaches the target in one or a few reads; only the first command of a read that
        // finds the target idle can be alone. A checkpoint or a segment change sends a lone write
        // to the appender now and then.
        Assert.That(together, Is.LessThanOrEqualTo(2 * bursts), $"of {bursts * depth} writes sent {depth} at a time, {together} were written on the receive loop (alone: {lone} of 100)");
        Assert.That(lone, Is.GreaterThanOrEqualTo(50), $"of 100 writes sent one at a time, {lone} were written on the receive loop (together: {together} of {bursts * depth})");
        var back = await c.CommandAsync(Cdb.Read10(99, 1), readLength: 4096);
        Assert.That(back!.Data, Is.EqualTo(data));
    }

    [Test]
    public async Task Large_reads_and_writes_use_r2t_bursts_and_several_data_in_pdus()
    {
        await using var f = await TargetFixture.StartAsync();
        await f.Pool.CreateVolumeAsync("big", 64L << 20, 4096);
        await using var c = await ConnectAsync(f.Port);
        Assert.That(await c.LoginAsync(TargetFixture.Iqn("big"), "iqn.2026-11.test:big", "MaxRecvDataSegmentLength=8192"), Is.Zero);
        var data = new byte[4 << 20];
        new Random(3).NextBytes(data);
        var w = await c.CommandAsync(Cdb.Write16(100, (uint)(data.Length / 4096)), writeData: data);
        Assert.That(w!.Status, Is.Zero);
        var r = await c.CommandAsync(Cdb.Read16(100, (uint)(data.Length / 4096)), readLength: data.Length);
        Assert.That(r!.Status, Is.Zero);
        Assert.That(r.Data, Is.EqualTo(data));
    }

    [Test]
    public async Task Reads_and_writes_allocate_next_to_nothing_per_command()
    {
        await using var f = await TargetFixture.StartAsync();
        await using var c = await f.LoginToNewVolumeAsync("alloc", 64L << 20, 4096);
        var s = c.Stream;
        var header = new byte[48];
        var data = new byte[4096];
        var response = new byte[48];
        var itt = 0x100000u;
        var cmdSn = c.CmdSn;

        void Io(bool write, uint lba)
        {
            Array.Clear(header);
            header[0] = 0x01;
            header[1] = (byte)(write ? 0xa1 : 0xc1);
            if (write)
            {
                header[6] = 0x10; // DataSegmentLength 4096 (immediate data)
            }
            BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(16), ++itt);
            BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(20), 4096);
            BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(24), cmdSn++);
            header[32] = (byte)(write ? 0x2a : 0x28);
            BinaryPrimitives.WriteUInt32BigEndian(header.AsSpan(34), lba);
            header[40] = 1;
            s.Write(header);
            if (write)
            {
                s.Write(data);
            }
            s.ReadExactly(response);
            var len = (response[5] << 16) | (response[6] << 8) | response[7];
            if (len > 0)
            {
                s.ReadExactly(data.AsSpan(0, len));
            }
            if (response[3] != 0)
            {
                throw new IOException($"status {response[3]}");
            }
        }

        for (var i = 0; i < 500; i++)
        {
            Io(i % 2 == 0, (uint)(i % 256));
        }
        const int N = 8000;
        using var listener = new AllocationListener();
        var before = GC.GetTotalAllocatedBytes(precise: true);
        for (var i = 0; i < N; i++)
        {
            Io(i % 2 == 0, (uint)(i % 256));
        }
        var perIo = (GC.GetTotalAllocatedBytes(precise: true) - before) / (double)N;
        TestContext.Out.WriteLine($"allocated {perIo:0.0} bytes per 4 KiB I/O (target, engine and this client together)");
        TestContext.Out.WriteLine(listener.Report());
        // The total is noisy (the test host, this blocking client's socket operations, the engine's
        // pooled async boxes): the precise check is that sampled allocations (one per ~100 KB)
        // never name an iSCSI type; 100 bytes per command would be sampled about 8 times here.
        Assert.That(listener.Types.Keys.Where(t => t.Contains("Ballast.Iscsi", StringComparison.Ordinal)), Is.Empty, listener.Report());
        Assert.That(perIo, Is.LessThan(2048));
    }

    private sealed class AllocationListener : System.Diagnostics.Tracing.EventListener
    {
        private readonly System.Collections.Concurrent.ConcurrentDictionary<string, int> _types = new();

        protected override void OnEventSourceCreated(System.Diagnostics.Tracing.EventSource source)
        {
            if (source.Name == "Microsoft-Windows-DotNETRuntime")
            {
                EnableEvents(source, System.Diagnostics.Tracing.EventLevel.Verbose, (System.Diagnostics.Tracing.EventKeywords)0x1);
            }
        }

        protected override void OnEventWritten(System.Diagnostics.Tracing.EventWrittenEventArgs e)
        {
            if (e.EventName?.StartsWith("GCAllocationTick", StringComparison.Ordinal) == true && e.Payload != null)
            {
                var i = e.PayloadNames!.IndexOf("TypeName");
                _types.AddOrUpdate(e.Payload[i]?.ToString() ?? "?", 1, (_, n) => n + 1);
            }
        }

        public System.Collections.Concurrent.ConcurrentDictionary<string, int> Types => _types;

        public string Report() => string.Join("\n", _types.OrderByDescending(x => x.Value).Select(x => $"{x.Value,5} {x.Key}"));
    }

    private static byte[] ScsiData(int seed)
    {
        var b = new byte[4096];
        new Random(seed).NextBytes(b);
        return b;
    }
}
