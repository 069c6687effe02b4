using Ballast.Engine.Tests.FaultInjection;
using Ballast.Engine.Volumes;

namespace Ballast.Engine.Tests.Recovery;

public class RecoveryTests
{
    private static async Task<byte[]> ReadAsync(IBlockVolume v, long offset, int length)
    {
        var b = new byte[length];
        await v.ReadAsync(offset, b);
        return b;
    }

    [Test]
    public async Task Flushed_writes_survive_a_crash_that_drops_everything_unsynced()
    {
        var storage = new FaultStorage();
        var pool = await TestPools.OpenAsync(storage);
        var v = await pool.CreateVolumeAsync("v", 4 << 20);
        var a = TestPools.Pattern(1, 65536);
        await v.WriteAsync(0, a, WriteFlags.None);
        await v.FlushAsync();
        await v.WriteAsync(0, TestPools.Pattern(2, 65536), WriteFlags.None); // never flushed
        storage.Crash();
        var image = storage.CrashImage(new Random(1), CrashMode.Subset);
        await pool.AbandonAsync();

        var reopened = await TestPools.OpenAsync(image);
        var back = await ReadAsync(reopened.OpenVolume("v"), 0, 65536);
        var b = TestPools.Pattern(2, 65536);
        for (var blk = 0; blk < 16; blk++)
        {
            var got = back.AsSpan(blk * 4096, 4096);
            Assert.That(got.SequenceEqual(a.AsSpan(blk * 4096, 4096)) || got.SequenceEqual(b.AsSpan(blk * 4096, 4096)), Is.True, $"block {blk} holds bytes never written to it");
        }
        Assert.That(reopened.Recovery.CleanShutdown, Is.False);
        await reopened.DisposeAsync();
    }

    [Test]
    public async Task Fua_writes_are_durable_without_a_flush()
    {
        var storage = new FaultStorage();
        var pool = await TestPools.OpenAsync(storage);
        var v = await pool.CreateVolumeAsync("v", 4 << 20);
        var a = TestPools.Pattern(3, 8192);
        await v.WriteAsync(8192, a, WriteFlags.Fua);
        storage.Crash();
        var image = storage.CrashImage(new Random(2), CrashMode.Prefix);
        await pool.AbandonAsync();
        await using var reopened = await TestPools.OpenAsync(image);
        Assert.That(await ReadAsync(reopened.OpenVolume("v"), 8192, 8192), Is.EqualTo(a));
    }

    [Test]
    public async Task A_restart_replays_only_the_log_tail_after_the_last_checkpoint()
    {
        var storage = new FaultStorage();
        var pool = await TestPools.OpenAsync(storage);
        var v = await pool.CreateVolumeAsync("v", 16 << 20);
        for (var i = 0; i < 200; i++)
        {
            await v.WriteAsync(i * 4096L, TestPools.Pattern(i, 4096), WriteFlags.None);
        }
        await pool.CheckpointAsync();
        await v.WriteAsync(300 * 4096L, TestPools.Pattern(300, 4096), WriteFlags.Fua);
        storage.Crash();
        await pool.AbandonAsync();

        await using var reopened = await TestPools.OpenAsync(storage.CrashImage(new Random(3), CrashMode.Prefix));
        TestContext.Out.WriteLine(reopened.Recovery);
        Assert.That(reopened.Recovery.CheckpointBytes, Is.GreaterThan(0));
        Assert.That(reopened.Recovery.ReplayedRecords, Is.EqualTo(1), "only the write after the checkpoint is replayed");
        var r = reopened.Recovery;
        // The phases are timed one after the other, inside the whole opening.
        Assert.That(r.CheckpointTime, Is.GreaterThan(TimeSpan.Zero));
        Assert.That(r.ReplayTime, Is.GreaterThan(TimeSpan.Zero));
        Assert.That(r.CheckpointTime + r.SummariesTime + r.ReplayTime, Is.LessThanOrEqualTo(r.Duration));
        Assert.That(r.ToString(), Does.Match(@"^opened in \d+ ms \(checkpoint \d+ ms, \d+ segment summaries \d+ ms, replay \d+ ms\): "));
        var rv = reopened.OpenVolume("v");
        for (var i = 0; i < 200; i += 37)
        {
            Assert.That(await ReadAsync(rv, i * 4096L, 4096), Is.EqualTo(TestPools.Pattern(i, 4096)));
        }
        Assert.That(await ReadAsync(rv, 300 * 4096L, 4096), Is.EqualTo(TestPools.Pattern(300, 4096)));
    }

    [Test]
    public async Task A_torn_tail_is_discarded_and_reported()
    {
        var storage = new FaultStorage();
        var pool = await TestPools.OpenAsync(storage);
        var v = await pool.CreateVolumeAsync("v", 4 << 20);
        await v.WriteAsync(0, TestPools.Pattern(4, 4096), WriteFlags.Fua);
        await pool.CheckpointAsync();
        // Three more batches that never get synced; the crash keeps the first, tears the second.
        for (var i = 1; i <= 3; i++)
        {
            await v.WriteAsync(i * 65536, TestPools.Pattern(10 + i, 65536), WriteFlags.None);
        }
        storage.Crash();
        await pool.AbandonAsync();
        var rng = new Random(5);
        FaultStorage? image = null;
        for (var attempt = 0; attempt < 200 && image == null; attempt++)
        {
            var candidate = storage.CrashImage(rng, CrashMode.Prefix);
            await using var probe = await TestPools.OpenAsync(candidate.CleanImage());
            if (probe.Recovery.ReplayedRecords == 1 && probe.Recovery.DiscardedBatches >= 1)
            {
                image = candidate;
            }
        }
        Assert.That(image, Is.Not.Null, "no crash image kept exactly one batch and tore the next");
        await using var reopened = await TestPools.OpenAsync(image);
        TestContext.Out.WriteLine(reopened.Recovery);
        Assert.That(reopened.Recovery.StopReason, Is.Not.Empty);
        Assert.That(reopened.Recovery.ToString(), Does.Contain("discarded"));
        var rv = reopened.OpenVolume("v");
        Assert.That(await ReadAsync(rv, 0, 4096), Is.EqualTo(TestPools.Pattern(4, 4096)));
        Assert.That(await ReadAsync(rv, 65536, 65536), Is.EqualTo(TestPools.Pattern(11, 65536)));
        // The log goes on after the torn point, and survives another restart.
        await rv.WriteAsync(2 * 65536, TestPools.Pattern(20, 4096), WriteFlags.Fua);
    }

    [Test]
    public async Task Replay_reads_batches_larger_than_the_options_now_allow()
    {
        var storage = new FaultStorage();
        var pool = await Pool.OpenAsync(TestPools.Options(storage, maxBatchBytes: 1 << 20));
        var v = await pool.CreateVolumeAsync("v", 8 << 20);
        var data = TestPools.Pattern(7, 4 << 20);
        for (var i = 0; i < 4; i++)
        {
            await v.WriteAsync(i << 20, data.AsMemory(i << 20, 1 << 20), WriteFlags.None);
        }
        await v.FlushAsync();
        await pool.AbandonAsync();
        // Reopened with smaller batches (the options changed between runs): the tail written
        // with the old ones must still replay in full.
        await using var reopened = await Pool.OpenAsync(TestPools.Options(storage.CrashImage(new Random(1), CrashMode.Prefix), maxBatchBytes: 64 << 10));
        TestContext.Out.WriteLine(reopened.Recovery.ToString());
        Assert.That(await ReadAsync(reopened.OpenVolume("v"), 0, 4 << 20), Is.EqualTo(data));
    }

    [Test]
    public async Task Corrupt_bytes_are_reported_by_scrub_and_never_served()
    {
        var storage = new FaultStorage();
        var pool = await TestPools.OpenAsync(storage);
        var v = await pool.CreateVolumeAsync("v", 4 << 20);
        await v.WriteAsync(0, TestPools.Pattern(6, 16 * 4096), WriteFlags.Fua);
        await pool.CheckpointAsync();
        await pool.DisposeAsync();
        var image = storage.CleanImage();
        // Find where block 5 of the volume lives: the first data batch starts right after segment 0's header.
        var reopened = await TestPools.OpenAsync(image);
        var before = await reopened.ScrubAsync();
        Assert.That(before.Corrupt, Is.Empty);
        var ranges = reopened.OpenVolume("v");
        await reopened.DisposeAsync();
        var damaged = FindBlock(image, TestPools.Pattern(6, 16 * 4096).AsSpan(5 * 4096, 4096).ToArray());
        image.Corrupt(damaged + 100, 3);

        await using var again = await TestPools.OpenAsync(image.CleanImage());
        var scrub = await again.ScrubAsync();
        TestContext.Out.WriteLine(scrub);
        Assert.That(scrub.Corrupt.Select(c => (c.Volume, c.Offset)), Is.EqualTo(new[] { ("v", 5 * 4096L) }));
        var rv = again.OpenVolume("v");
        var e = Assert.ThrowsAsync<BlockVolumeException>(async () => await ReadAsync(rv, 5 * 4096 + 10, 10));
        Assert.That(e!.Error, Is.EqualTo(BlockError.Io));
        Assert.That(await ReadAsync(rv, 4 * 4096, 4096), Is.EqualTo(TestPools.Pattern(6, 16 * 4096).AsSpan(4 * 4096, 4096).ToArray()));
        Assert.That(rv.Counters.ChecksumErrors, Is.EqualTo(1));
        GC.KeepAlive(ranges);
    }

    private static long FindBlock(FaultStorage s, byte[] content)
    {
        var buf = new byte[4096];
        for (long off = 0; off < s.Length; off += 4096)
        {
            s.Read(off, buf);
            if (buf.AsSpan().SequenceEqual(content))
            {
                return off;
            }
        }
        throw new InvalidOperationException("block not found");
    }

    [Test]
    public async Task A_damaged_segment_summary_is_rebuilt_from_the_batch_headers()
    {
        var storage = new FaultStorage();
        var pool = await TestPools.OpenAsync(storage);
        var v = await pool.CreateVolumeAsync("v", 8 << 20);
        var data = TestPools.Pattern(9, 3 << 20); // spans several 1 MiB segments, so some get sealed
        await v.WriteAsync(0, data, WriteFlags.None);
        await pool.DisposeAsync();
        var image = storage.CleanImage();
        // Damage the summary of every sealed segment: it sits in the blocks right after the seal.
        var damaged = 0;
        var buf = new byte[4096];
        var layout = new Ballast.Engine.Log.PoolLayout(TestPools.SegmentSize, (int)((64L << 20) / TestPools.SegmentSize));
        for (var seg = 0; seg < layout.SegmentCount; seg++)
        {
            for (var off = layout.FirstBatchOffset; off <= layout.BatchLimit; off += 4096)
            {
                image.Read(layout.SegmentOffset(seg) + off, buf);
                if (System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(buf) != Ballast.Engine.Log.BatchFormat.Magic)
                {
                    continue;
                }
                var records = new List<Ballast.Engine.Log.DecodedRecord>();
                var hb = System.Buffers.Binary.BinaryPrimitives.ReadInt32LittleEndian(buf.AsSpan(16));
                if (hb == 4096 && Ballast.Engine.Log.BatchFormat.TryDecodeRecords(buf, 0, records, out _) && records.Any(r => r.Descriptor.Kind == Ballast.Engine.Log.RecordKind.Seal))
                {
                    image.Corrupt(layout.SegmentOffset(seg) + off + 4096 + 8, 4);
                    damaged++;
                    break;
                }
            }
        }
        Assert.That(damaged, Is.GreaterThan(0));
        await using var reopened = await TestPools.OpenAsync(image);
        TestContext.Out.WriteLine(reopened.Recovery);
        Assert.That(reopened.Recovery.SummariesRebuilt, Is.GreaterThan(0));
        var back = new byte[data.Length];
        await reopened.OpenVolume("v").ReadAsync(0, back);
        Assert.That(back, Is.EqualTo(data));
    }

    [Test]
    public async Task A_corrupt_checkpoint_stops_the_open_with_a_clear_message()
    {
        var storage = new FaultStorage();
        var pool = await TestPools.OpenAsync(storage);
        var v = await pool.CreateVolumeAsync("v", 4 << 20);
        await v.WriteAsync(0, TestPools.Pattern(7, 4096), WriteFlags.Fua);
        await pool.DisposeAsync();
        var image = storage.CleanImage();
        // Flip bytes in every checkpoint segment's body (segments with the checkpoint header kind).
        var buf = new byte[4096];
        for (long off = 1 << 20; off < image.Length; off += 1 << 20)
        {
            image.Read(off, buf);
            if (Ballast.Engine.Log.SegmentHeader.TryDecode(buf, out var h) && h.Kind == Ballast.Engine.Log.SegmentKind.Checkpoint)
            {
                image.Corrupt(off + 4096 + 40, 2);
            }
        }
        var e = Assert.ThrowsAsync<InvalidDataException>(() => TestPools.OpenAsync(image));
        TestContext.Out.WriteLine(e!.Message);
        Assert.That(e.Message, Does.Contain("checkpoint"));
    }

    [Test]
    public async Task Garbage_in_place_of_a_pool_is_not_overwritten()
    {
        var image = new FaultStorage();
        image.Grow(8 << 20);
        image.Write(0, TestPools.Pattern(8, 8192));
        image.Sync();
        var e = Assert.ThrowsAsync<InvalidDataException>(() => TestPools.OpenAsync(image));
        Assert.That(e!.Message, Does.Contain("refusing to overwrite"));
        await Task.CompletedTask;
    }
}
