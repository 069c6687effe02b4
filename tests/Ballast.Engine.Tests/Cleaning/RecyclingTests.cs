using Ballast.Engine.Cleaning;
using Ballast.Engine.Tests.FaultInjection;
using Ballast.Engine.Volumes;

namespace Ballast.Engine.Tests.Cleaning;

/// <summary>
/// Slack-space recycling: near a full pool, client writes go into dead blocks of older segments.
/// These check that such writes read back, survive a clean restart (the checkpoint carries the
/// recycled segments' CRCs) and a crash (replay applies them from the log tail), that replay
/// keeps what a later write did not replace, and that damaged data in a hole reads as a
/// checksum error rather than as the block's older data.
/// </summary>
public class RecyclingTests
{
    private const long Capacity = 24L << 20;
    private const int VolumeBlocks = 2048;

    private sealed class Workload(Pool pool, IBlockVolume volume)
    {
        public readonly byte[][] Model = new byte[VolumeBlocks][];
        public Pool Pool = pool;
        public IBlockVolume Volume = volume;
        private int _next;

        public async Task FillAsync()
        {
            for (var b = 0; b < VolumeBlocks; b += 64)
            {
                var data = TestPools.Pattern(1_000_000 + b, 64 * 4096);
                await Volume.WriteAsync(b * 4096L, data, WriteFlags.None);
                for (var k = 0; k < 64; k++)
                {
                    Model[b + k] = data.AsSpan(k * 4096, 4096).ToArray();
                }
            }
        }

        /// <summary>Random 4 KiB overwrites, with the background cleaner's work done by hand, until <paramref name="recycled"/> blocks went into holes.</summary>
        public async Task OverwriteUntilRecycledAsync(int seed, long recycled)
        {
            var rng = new Random(seed);
            var start = Pool.GetStats().RecycledBlocksWritten;
            for (var i = 0; i < 40_000 && Pool.GetStats().RecycledBlocksWritten - start < recycled; i++)
            {
                await WriteAsync(rng.Next(VolumeBlocks));
                if (i % 32 == 31)
                {
                    // What the maintenance loop does: recycle-only passes while space is not short.
                    await Pool.CleanAsync();
                }
            }
            Assert.That(Pool.GetStats().RecycledBlocksWritten - start, Is.GreaterThanOrEqualTo(recycled), "writes never went into recycled holes");
        }

        public async Task<byte[]> WriteAsync(int block)
        {
            var data = TestPools.Pattern(++_next * 7919, 4096);
            await Volume.WriteAsync(block * 4096L, data, WriteFlags.None);
            Model[block] = data;
            return data;
        }

        /// <summary>Writes <paramref name="count"/> blocks in one request; returns each block's data.</summary>
        public async Task<byte[][]> WriteRangeAsync(int block, int count)
        {
            var data = TestPools.Pattern(++_next * 7919, count * 4096);
            await Volume.WriteAsync(block * 4096L, data, WriteFlags.None);
            var blocks = new byte[count][];
            for (var k = 0; k < count; k++)
            {
                blocks[k] = data.AsSpan(k * 4096, 4096).ToArray();
                Model[block + k] = blocks[k];
            }
            return blocks;
        }

        public async Task VerifyAsync(string when, int skip = -1)
        {
            var buf = new byte[4096];
            for (var b = 0; b < VolumeBlocks; b++)
            {
                if (b == skip)
                {
                    continue;
                }
                await Volume.ReadAsync(b * 4096L, buf);
                Assert.That(buf.AsSpan().SequenceEqual(Model[b]), Is.True, $"block {b} differs {when}");
            }
        }
    }

    private static async Task<Workload> StartAsync(FaultStorage storage)
    {
        // Recycling whatever the victims' fill: at a third full, copying is often the cheaper
        // choice, and these tests are about what happens to writes into holes.
        var pool = await Pool.OpenAsync(TestPools.Options(storage, Capacity, recycleAboveLive: 0));
        var w = new Workload(pool, await pool.CreateVolumeAsync("v", VolumeBlocks * 4096L));
        await w.FillAsync();
        return w;
    }

    [Test]
    public async Task Writes_into_holes_read_back_after_a_clean_restart_and_after_a_crash()
    {
        var storage = new FaultStorage();
        var w = await StartAsync(storage);
        await w.OverwriteUntilRecycledAsync(1, 2000);
        var stats = w.Pool.GetStats();
        TestContext.Out.WriteLine($"recycled {stats.RecycledBlocksWritten} blocks, cleaner moved {stats.CleanerBytesMoved >> 10} KiB, WA {stats.WriteAmplification:F2}");
        await w.VerifyAsync("while running");

        // Clean shutdown: the final checkpoint carries the recycled segments' CRCs.
        await w.Pool.DisposeAsync();
        var image = storage.CleanImage();
        w.Pool = await TestPools.OpenAsync(image, Capacity);
        w.Volume = w.Pool.OpenVolume("v");
        await w.VerifyAsync("after a clean restart");

        // Crash without a checkpoint: replay reads the in-place writes' data where it lies.
        await w.OverwriteUntilRecycledAsync(2, 500);
        await w.Volume.FlushAsync();
        await w.Pool.AbandonAsync();
        await using var crashed = await TestPools.OpenAsync(image.CleanImage(), Capacity);
        TestContext.Out.WriteLine(crashed.Recovery.ToString());
        w.Volume = crashed.OpenVolume("v");
        await w.VerifyAsync("after a crash");
    }

    [Test]
    public async Task A_failed_sync_of_data_in_holes_fails_the_write_and_every_later_flush()
    {
        var storage = new FaultStorage();
        var w = await StartAsync(storage);
        await w.OverwriteUntilRecycledAsync(4, 200);
        await w.Volume.FlushAsync();
        var before = w.Pool.GetStats().RecycledBlocksWritten;
        storage.FailSyncs = 1;
        var e = Assert.ThrowsAsync<BlockVolumeException>(async () => await w.WriteAsync(77), "a write whose data in holes was not synced succeeded");
        Assert.That(e!.Error, Is.EqualTo(BlockError.Io));
        Assert.That(w.Pool.GetStats().RecycledBlocksWritten, Is.EqualTo(before), "the failed write was counted as written into holes");
        // The device's next sync would succeed; the pool must not take that as durability.
        var flush = Assert.ThrowsAsync<BlockVolumeException>(async () => await w.Volume.FlushAsync(), "a flush after the failed sync succeeded");
        Assert.That(flush!.Error, Is.EqualTo(BlockError.Io));
        Assert.That(w.Pool.GetStats().Poisoned, Is.True);
        await w.Pool.AbandonAsync();
    }

    [Test]
    public async Task A_write_into_a_hole_whose_data_was_damaged_reads_as_a_checksum_error_not_as_older_data()
    {
        var storage = new FaultStorage();
        var w = await StartAsync(storage);
        await w.OverwriteUntilRecycledAsync(3, 200);
        var before = w.Pool.GetStats().RecycledBlocksWritten;
        const int Target = 77;
        var damaged = await w.WriteAsync(Target);
        Assert.That(w.Pool.GetStats().RecycledBlocksWritten, Is.EqualTo(before + 1), "the last write did not go into a hole");
        await w.Volume.FlushAsync();
        var image = storage.CleanImage();
        int baseline;
        await using (var intact = await TestPools.OpenAsync(image.CleanImage(), Capacity))
        {
            // Blocks of earlier in-place writes that were replaced and recycled again.
            baseline = intact.Recovery.InPlaceBlocksMismatched;
        }
        // The block goes bad on the device while the record that put it there is in the tail.
        var hole = image.FindBlock(damaged);
        Assert.That(hole, Is.GreaterThan(0));
        image.Corrupt(hole * 4096, 4096);
        await w.Pool.AbandonAsync();

        await using var reopened = await TestPools.OpenAsync(image, Capacity);
        TestContext.Out.WriteLine(reopened.Recovery.ToString());
        Assert.That(reopened.Recovery.InPlaceBlocksMismatched, Is.EqualTo(baseline + 1));
        w.Volume = reopened.OpenVolume("v");
        // Not the block's older data, whose place may belong to another write by now.
        var e = Assert.ThrowsAsync<BlockVolumeException>(async () => await w.Volume.ReadAsync(Target * 4096L, new byte[4096]));
        Assert.That(e!.Error, Is.EqualTo(BlockError.Io));
        w.Model[Target] = null!;
        await w.VerifyAsync("after the damaged in-place write", skip: Target);
    }

    [Test]
    public async Task Replay_keeps_the_blocks_of_a_write_into_holes_that_a_later_write_did_not_replace()
    {
        var storage = new FaultStorage();
        var w = await StartAsync(storage);
        await w.OverwriteUntilRecycledAsync(4, 200);
        await w.Volume.FlushAsync();
        // A three-block write that went into holes (a run of three is not always near the cursor).
        var rng = new Random(4);
        byte[][]? written = null;
        var target = 0;
        for (var i = 0; i < 200 && written == null; i++)
        {
            target = rng.Next(VolumeBlocks - 3);
            var before = w.Pool.GetStats().RecycledBlocksWritten;
            var blocks = await w.WriteRangeAsync(target, 3);
            written = w.Pool.GetStats().RecycledBlocksWritten == before + 3 ? blocks : null;
        }
        Assert.That(written, Is.Not.Null, "no three-block write went into holes");
        await w.Volume.FlushAsync();
        // Its middle block is replaced, and (as if its hole were recycled again) overwritten.
        await w.WriteAsync(target + 1);
        await w.Volume.FlushAsync();
        var image = storage.CleanImage();
        int baseline;
        await using (var intact = await TestPools.OpenAsync(image.CleanImage(), Capacity))
        {
            baseline = intact.Recovery.InPlaceBlocksMismatched;
        }
        var hole = image.FindBlock(written![1]);
        Assert.That(hole, Is.GreaterThan(0));
        image.Corrupt(hole * 4096, 4096);
        await w.Pool.AbandonAsync();

        await using var reopened = await TestPools.OpenAsync(image, Capacity);
        TestContext.Out.WriteLine(reopened.Recovery.ToString());
        Assert.That(reopened.Recovery.InPlaceBlocksMismatched, Is.EqualTo(baseline + 1), "only the replaced block no longer matches");
        w.Volume = reopened.OpenVolume("v");
        await w.VerifyAsync("after replay met one recycled block of a write into holes");
    }

    [Test]
    public void Holes_are_taken_in_order_and_a_new_list_leaves_out_what_was_taken_during_its_mark()
    {
        var holes = new RecycleHoles();
        holes.Swap([(100, 1), (102, 3), (110, 2)]);
        Assert.That(holes.Remaining, Is.EqualTo(6));
        Assert.That(holes.TryTake(1, out var a), Is.True);
        Assert.That(a, Is.EqualTo(100));
        // Two blocks: the run at 102 has them.
        Assert.That(holes.TryTake(2, out var b), Is.True);
        Assert.That(b, Is.EqualTo(102));
        Assert.That(holes.TryTake(3, out _), Is.False, "no run of 3 is left");

        holes.BeginMark();
        Assert.That(holes.TryTake(1, out var c), Is.True);
        Assert.That(c, Is.EqualTo(104));
        Assert.That(holes.TryTake(1, out var d), Is.True);
        Assert.That(d, Is.EqualTo(110));
        // The mark saw 104 and 110 dead; both were written after it began.
        var old = holes.Swap([(103, 3), (110, 3)]);
        Assert.That(old, Is.Not.Null);
        var taken = new List<long>();
        while (holes.TryTake(1, out var p))
        {
            taken.Add(p);
        }
        Assert.That(taken, Is.EqualTo(new long[] { 103, 105, 111, 112 }));
        Assert.That(holes.Remaining, Is.Zero);
    }
}
