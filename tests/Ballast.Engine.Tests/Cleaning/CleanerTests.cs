using Ballast.Engine.Cleaning;
using Ballast.Engine.Tests.FaultInjection;
using Ballast.Engine.Volumes;

namespace Ballast.Engine.Tests.Cleaning;

public class CleanerTests
{
    private static async Task<byte[]> ReadAsync(IBlockVolume v, long offset, int length)
    {
        var b = new byte[length];
        await v.ReadAsync(offset, b);
        return b;
    }

    [Test]
    public async Task Overwritten_space_comes_back_and_data_stays_intact()
    {
        var storage = new FaultStorage();
        var pool = await TestPools.OpenAsync(storage, capacity: 32L << 20);
        var v = await pool.CreateVolumeAsync("v", 8 << 20);
        var rng = new Random(1);
        var model = new byte[8 << 20];
        // Write 5x the volume size into a pool only 4x its size: impossible without the cleaner.
        for (var round = 0; round < 5 * 256; round++)
        {
            var off = rng.Next(256) * 32768L;
            var data = TestPools.Pattern(round, 32768);
            await v.WriteAsync(off, data, WriteFlags.None);
            data.CopyTo(model, off);
            if (pool.GetStats().FreeSegments < 8)
            {
                Assert.That(await pool.CleanPassAsync(16), Is.GreaterThan(0), "cleaner freed nothing");
            }
        }
        var stats = pool.GetStats();
        TestContext.Out.WriteLine($"cleaner passes {stats.CleanerPasses}, freed {stats.CleanerSegmentsFreed}, moved {stats.CleanerBytesMoved >> 10} KiB, WA {stats.WriteAmplification:F2}");
        Assert.That(stats.CleanerSegmentsFreed, Is.GreaterThan(0));
        Assert.That(await ReadAsync(v, 0, model.Length), Is.EqualTo(model));
        await pool.DisposeAsync();
        await using var reopened = await TestPools.OpenAsync(storage.CleanImage(), capacity: 32L << 20);
        Assert.That(await ReadAsync(reopened.OpenVolume("v"), 0, model.Length), Is.EqualTo(model));
    }

    [Test]
    public async Task Cleaning_moves_data_that_only_a_snapshot_still_needs()
    {
        var storage = new FaultStorage();
        await using var pool = await TestPools.OpenAsync(storage, capacity: 32L << 20);
        var v = await pool.CreateVolumeAsync("v", 4 << 20);
        var a = TestPools.Pattern(1, 4 << 20);
        await v.WriteAsync(0, a, WriteFlags.None);
        await pool.CreateSnapshotAsync("v", "s");
        // Overwrite half of every segment's worth so the old segments are partly live only through the snapshot.
        for (var i = 0; i < 4 << 20; i += 8192)
        {
            await v.WriteAsync(i, TestPools.Pattern(i, 4096), WriteFlags.None);
        }
        var freed = await pool.CleanPassAsync(pool.GetStats().Segments);
        Assert.That(freed, Is.GreaterThan(0));
        Assert.That(await ReadAsync(pool.OpenVolume("v@s"), 0, a.Length), Is.EqualTo(a));
        var cur = await ReadAsync(v, 0, 8192);
        Assert.That(cur.AsSpan(0, 4096).SequenceEqual(TestPools.Pattern(0, 4096)), Is.True);
        Assert.That(cur.AsSpan(4096).SequenceEqual(a.AsSpan(4096, 4096)), Is.True);
    }

    [Test]
    public async Task Scattered_live_blocks_are_copied_with_few_reads_and_stay_intact()
    {
        var storage = new FaultStorage();
        var pool = await TestPools.OpenAsync(storage, capacity: 32L << 20);
        const int Size = 8 << 20;
        var v = await pool.CreateVolumeAsync("v", Size);
        var model = TestPools.Pattern(1, Size);
        await v.WriteAsync(0, model, WriteFlags.None);
        // First half: every other block overwritten (live pieces one block apart, read together).
        // Second half: only every 64th block left live (gaps longer than a read may span).
        for (var block = 0; block < Size / 4096; block++)
        {
            var keep = block < Size / 8192 ? block % 2 == 0 : block % 64 == 0;
            if (!keep)
            {
                var data = TestPools.Pattern(block + 7, 4096);
                await v.WriteAsync(block * 4096L, data, WriteFlags.None);
                data.CopyTo(model, block * 4096);
            }
        }
        var freed = await pool.CleanPassAsync(pool.GetStats().Segments);
        var stats = pool.GetStats();
        TestContext.Out.WriteLine($"freed {freed}, moved {stats.CleanerBytesMoved >> 10} KiB in {stats.CleanerReads} reads");
        Assert.That(freed, Is.GreaterThan(4));
        // At least 512 + 16 scattered live pieces: one read each would be 528 reads or more.
        // With this pool's 256 KiB copy buffer, about 120 (4 MiB in production, about 5 per segment).
        Assert.That(stats.CleanerBytesMoved, Is.GreaterThanOrEqualTo(528L * 4096));
        Assert.That(stats.CleanerReads, Is.InRange(16, 200));
        Assert.That(await ReadAsync(v, 0, Size), Is.EqualTo(model));
        await pool.DisposeAsync();
        await using var reopened = await TestPools.OpenAsync(storage.CleanImage(), capacity: 32L << 20);
        Assert.That(await ReadAsync(reopened.OpenVolume("v"), 0, Size), Is.EqualTo(model));
    }

    [Test]
    public async Task An_unreadable_dead_block_between_live_pieces_does_not_stop_the_cleaner()
    {
        var storage = new FaultStorage();
        await using var pool = await TestPools.OpenAsync(storage, capacity: 32L << 20);
        const int Size = 4 << 20;
        var v = await pool.CreateVolumeAsync("v", Size);
        var model = TestPools.Pattern(1, Size);
        await v.WriteAsync(0, model, WriteFlags.None);
        await v.FlushAsync();
        var deadOld = model.AsSpan(4096, 4096).ToArray();
        for (var block = 1; block < Size / 4096; block += 2)
        {
            var data = TestPools.Pattern(block + 7, 4096);
            await v.WriteAsync(block * 4096L, data, WriteFlags.None);
            data.CopyTo(model, block * 4096);
        }
        // Volume block 1's old copy is dead and lies between the live old copies of blocks 0 and 2:
        // a read joining them fails; the cleaner must fall back to reading the live pieces alone.
        var bad = storage.FindBlock(deadOld);
        Assert.That(bad, Is.GreaterThan(0));
        storage.UnreadableBlocks.Add(bad);
        // Every segment of the first write is half live, so all of them are victims: a joined
        // read that failed without the fallback would throw out of the pass.
        var freed = await pool.CleanPassAsync(pool.GetStats().Segments);
        Assert.That(freed, Is.GreaterThanOrEqualTo(4));
        Assert.That(pool.GetStats().CleanerBytesMoved, Is.GreaterThanOrEqualTo(Size / 2));
        // The freed segments take new data; a rewritten sector reads again (as a disk remaps it).
        storage.UnreadableBlocks.Clear();
        Assert.That(await ReadAsync(v, 0, Size), Is.EqualTo(model));
    }

    [Test]
    public void A_read_spans_components_while_gaps_are_short_and_the_buffer_has_room()
    {
        List<LiveRanges.Component> comps =
        [
            new() { Phys = 100, Count = 2 },
            new() { Phys = 102, Count = 1 },                            // adjacent
            new() { Phys = 103 + Pool.MaxReadGapBlocks, Count = 4 },    // the longest gap read through
            new() { Phys = 200, Count = 1 },                            // gap too long
            new() { Phys = 202, Count = 8 },
        ];
        Assert.Multiple(() =>
        {
            Assert.That(Pool.ReadSpanEnd(comps, 0, 1024), Is.EqualTo(107 + Pool.MaxReadGapBlocks));
            Assert.That(Pool.ReadSpanEnd(comps, 3, 1024), Is.EqualTo(210));
            Assert.That(Pool.ReadSpanEnd(comps, 3, 9), Is.EqualTo(201), "the next piece would not fit the buffer");
            Assert.That(Pool.ReadSpanEnd(comps, 0, 3), Is.EqualTo(103));
            Assert.That(Pool.ReadSpanEnd(comps, 4, 8), Is.EqualTo(210));
        });
    }

    [Test]
    public async Task Deleting_a_snapshot_or_volume_releases_its_space()
    {
        await using var pool = await TestPools.OpenAsync(new FaultStorage(), capacity: 32L << 20);
        var v = await pool.CreateVolumeAsync("v", 8 << 20);
        await v.WriteAsync(0, TestPools.Pattern(1, 8 << 20), WriteFlags.None);
        await pool.CreateSnapshotAsync("v", "s");
        await v.WriteAsync(0, TestPools.Pattern(2, 8 << 20), WriteFlags.None);
        var used = pool.GetStats().LogSegments;
        await pool.CleanPassAsync(pool.GetStats().Segments);
        Assert.That(pool.GetStats().LogSegments, Is.GreaterThan(16), "the snapshot pins the old data");
        await pool.DeleteVolumeAsync("v@s");
        await pool.CleanPassAsync(pool.GetStats().Segments);
        var afterSnap = pool.GetStats().LogSegments;
        Assert.That(afterSnap, Is.LessThan(used - 6));
        await pool.DeleteVolumeAsync("v");
        await pool.CleanPassAsync(pool.GetStats().Segments);
        Assert.That(pool.GetStats().LogSegments, Is.LessThanOrEqualTo(3));
    }

    [Test]
    public async Task A_handle_kept_past_a_delete_reads_nothing_of_the_space_given_to_others()
    {
        await using var pool = await TestPools.OpenAsync(new FaultStorage(), capacity: 32L << 20);
        var v = await pool.CreateVolumeAsync("v", 4 << 20);
        await v.WriteAsync(0, TestPools.Pattern(1, 4 << 20), WriteFlags.None);
        await pool.DeleteVolumeAsync("v");
        // Its blocks are free for the cleaner to reuse: the old handle must not read them.
        var w = await pool.CreateVolumeAsync("w", 4 << 20);
        await w.WriteAsync(0, TestPools.Pattern(2, 4 << 20), WriteFlags.None);
        await pool.CleanPassAsync(pool.GetStats().Segments);
        var e = Assert.ThrowsAsync<BlockVolumeException>(async () => await v.ReadAsync(0, new byte[4096]));
        Assert.That(e!.Error, Is.EqualTo(BlockError.Gone));
    }

    [Test]
    [CancelAfter(120_000)]
    public async Task A_pool_80_percent_full_keeps_accepting_random_overwrites(CancellationToken ct)
    {
        // The background cleaner alone must keep up: no write may fail with ENOSPC and the
        // writers must never stall, even though free space sits at the reserve the whole time.
        var storage = new FaultStorage();
        var options = TestPools.Options(storage, capacity: 64L << 20, background: true);
        await using var pool = await Pool.OpenAsync(options);
        var size = (long)(pool.Capacity * 0.8) & ~4095L;
        var v = await pool.CreateVolumeAsync("v", size);
        var model = new byte[size];
        new Random(7).NextBytes(model);
        await v.WriteAsync(0, model, WriteFlags.None);
        var blocks = size / 4096;
        var writesPerWorker = (int)(2 * blocks / 8);
        var failures = 0;
        var workers = Enumerable.Range(0, 8).Select(w => Task.Run(async () =>
        {
            var rng = new Random(100 + w);
            var buf = new byte[4096];
            for (var i = 0; i < writesPerWorker && !ct.IsCancellationRequested; i++)
            {
                // Each worker owns the blocks congruent to its number, so the model stays exact.
                var block = (rng.NextInt64(blocks / 8) * 8) + w;
                if (block >= blocks)
                {
                    continue;
                }
                rng.NextBytes(buf);
                try
                {
                    await v.WriteAsync(block * 4096, buf, WriteFlags.None, ct);
                    buf.CopyTo(model, block * 4096);
                }
                catch (BlockVolumeException)
                {
                    Interlocked.Increment(ref failures);
                }
            }
        }, ct)).ToArray();
        await Task.WhenAll(workers);
        var stats = pool.GetStats();
        TestContext.Out.WriteLine($"free {stats.FreeSegments}/{stats.Segments}, cleaner passes {stats.CleanerPasses}, moved {stats.CleanerBytesMoved >> 20} MiB, WA {stats.WriteAmplification:F2}");
        Assert.That(failures, Is.Zero, "writes failed although the cleaner could reclaim space");
        Assert.That(stats.CleanerSegmentsFreed, Is.GreaterThan(0));
        Assert.That(await ReadAsync(v, 0, model.Length), Is.EqualTo(model));
    }
}
