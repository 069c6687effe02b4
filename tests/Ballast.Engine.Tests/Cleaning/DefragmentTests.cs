using Ballast.Engine.Tests.FaultInjection;
using Ballast.Engine.Volumes;

namespace Ballast.Engine.Tests.Cleaning;

public class DefragmentTests
{
    private const int Block = 4096;
    private const int VolumeBytes = 8 << 20;

    // Batches as large as a test segment allows, so a moved window lies in a few runs.
    private static Task<Pool> OpenAsync(FaultStorage storage, long capacity = 64L << 20, Action<PoolLogLevel, string>? log = null) =>
        Pool.OpenAsync(TestPools.Options(storage, capacity, log: log, maxBatchBytes: 1 << 20));

    /// <summary>Every block of the volume written once, one 4 KiB write at a time in random order: one run per block.</summary>
    private static async Task<byte[]> WriteAtRandomAsync(EngineVolume v, int seed, int bytes = VolumeBytes)
    {
        var model = new byte[bytes];
        var order = Enumerable.Range(0, bytes / Block).ToArray();
        new Random(seed).Shuffle(order);
        foreach (var b in order)
        {
            var data = TestPools.Pattern(seed * 100_000 + b, Block);
            await v.WriteAsync((long)b * Block, data, WriteFlags.None);
            data.CopyTo(model, b * Block);
        }
        await v.FlushAsync();
        return model;
    }

    private static async Task<byte[]> ReadAllAsync(IBlockVolume v, int bytes = VolumeBytes)
    {
        var b = new byte[bytes];
        await v.ReadAsync(0, b);
        return b;
    }

    [Test]
    public async Task A_volume_written_at_random_reads_the_same_from_a_few_runs_after_a_crash_and_after_a_restart()
    {
        var storage = new FaultStorage();
        var pool = await OpenAsync(storage);
        var v = await pool.CreateVolumeAsync("v", VolumeBytes);
        var model = await WriteAtRandomAsync(v, 1);
        Assert.That(pool.GetUsage("v").DataRuns, Is.GreaterThan(1500), "written at random: nearly one run per block");

        var report = await pool.DefragmentAsync("v");

        TestContext.Out.WriteLine($"runs {report.RunsBefore} -> {report.RunsAfter}, windows {report.WindowsMoved}/{report.WindowsScanned}, blocks {report.BlocksMoved}");
        Assert.That(report.StoppedBecause, Is.Null);
        Assert.That(report.WindowsScanned, Is.EqualTo(VolumeBytes / Block / Pool.DefragWindowBlocks));
        Assert.That(report.WindowsMoved, Is.EqualTo(report.WindowsScanned));
        Assert.That(report.BlocksMoved, Is.EqualTo(VolumeBytes / Block));
        // A 1 MiB test segment holds 255 blocks, and batches break runs too: 64 blocks a run at least.
        Assert.That(report.RunsAfter, Is.LessThanOrEqualTo(VolumeBytes / Block / 64));
        Assert.That(pool.GetUsage("v").DataRuns, Is.EqualTo(report.RunsAfter));
        Assert.That(await ReadAllAsync(v), Is.EqualTo(model));

        var again = await pool.DefragmentAsync("v");
        Assert.That(again.BlocksMoved, Is.Zero, "a defragmented volume has nothing left to move");

        // Replay (no checkpoint since) must redo each step's redirection from its commit record.
        var crashed = await TestPools.CutPowerAsync(storage, pool, 1, CrashMode.Subset);
        var reopened = await OpenAsync(crashed);
        Assert.That(reopened.Recovery.ReplayedRecords, Is.GreaterThan(2 * 2048), "the writes and the moves came back through replay");
        Assert.That(await ReadAllAsync(reopened.OpenVolume("v")), Is.EqualTo(model));
        Assert.That(reopened.GetUsage("v").DataRuns, Is.EqualTo(report.RunsAfter));
        // The old copies are dead: cleaning frees their segments and the data stays.
        Assert.That(await reopened.CleanPassAsync(reopened.GetStats().Segments), Is.GreaterThan(0));
        await reopened.DisposeAsync();
        await using var restarted = await OpenAsync(crashed.CleanImage());
        Assert.That(await ReadAllAsync(restarted.OpenVolume("v")), Is.EqualTo(model));
    }

    [Test]
    public async Task Segments_the_moves_emptied_are_freed_and_replay_still_finds_the_data()
    {
        const int Bytes = 2 << 20;
        var storage = new FaultStorage();
        var pool = await OpenAsync(storage);
        var v = await pool.CreateVolumeAsync("v", Bytes);
        var model = await WriteAtRandomAsync(v, 7, Bytes);
        // Only segments before the replay start are cleaned: the random writes' must be.
        await pool.CheckpointAsync();
        var report = await pool.DefragmentAsync("v");
        Assert.That(report.BlocksMoved, Is.EqualTo(Bytes / Block));
        var freed = await pool.CleanPassAsync(pool.GetStats().Segments);
        Assert.That(freed, Is.GreaterThanOrEqualTo(3), "the segments the random writes filled hold nothing live");
        // New data fills the pool, freed segments included: a map that still pointed there would read it.
        var filler = await pool.CreateVolumeAsync("f", 40 << 20);
        for (var at = 0; at < 40 << 20; at += 1 << 20)
        {
            await filler.WriteAsync(at, TestPools.Pattern(at, 1 << 20), WriteFlags.Fua);
        }
        await using var reopened = await OpenAsync(await TestPools.CutPowerAsync(storage, pool, 7, CrashMode.Prefix));
        Assert.That(reopened.Recovery.ReplayedRecords, Is.GreaterThan(Bytes / Block), "the moves and the cleaning came back through replay");
        Assert.That(await ReadAllAsync(reopened.OpenVolume("v"), Bytes), Is.EqualTo(model));
    }

    [Test]
    public async Task A_snapshot_whose_entries_span_blocks_the_volume_replaced_keeps_its_data()
    {
        var storage = new FaultStorage();
        var pool = await OpenAsync(storage);
        var v = await pool.CreateVolumeAsync("v", VolumeBytes);
        // 64 KiB writes in random order: the snapshot's entries run 16 blocks each.
        var old = new byte[VolumeBytes];
        var chunks = Enumerable.Range(0, VolumeBytes / 65536).ToArray();
        new Random(2).Shuffle(chunks);
        foreach (var c in chunks)
        {
            var data = TestPools.Pattern(600_000 + c, 65536);
            await v.WriteAsync(c * 65536L, data, WriteFlags.None);
            data.CopyTo(old, c * 65536);
        }
        await pool.CreateSnapshotAsync("v", "s");
        // Every fourth block overwritten: the volume's pieces alternate between the snapshot's
        // blocks and new ones, and the copies of both land back to back in volume order. A
        // snapshot entry spans them, but only parts of it were copied.
        var current = (byte[])old.Clone();
        for (var b = 1; b < VolumeBytes / Block; b += 4)
        {
            var data = TestPools.Pattern(900_000 + b, Block);
            await v.WriteAsync((long)b * Block, data, WriteFlags.None);
            data.CopyTo(current, b * Block);
        }
        var snapshotRuns = pool.GetUsage("v@s").DataRuns;

        var report = await pool.DefragmentAsync("v");

        Assert.That(report.BlocksMoved, Is.EqualTo(VolumeBytes / Block));
        Assert.That(await ReadAllAsync(v), Is.EqualTo(current));
        Assert.That(await ReadAllAsync(pool.OpenVolume("v@s")), Is.EqualTo(old));
        // The snapshot's entries each span blocks the volume no longer has: they stay where they were.
        Assert.That(pool.GetUsage("v@s").DataRuns, Is.EqualTo(snapshotRuns));
        Assert.That(await pool.CleanPassAsync(pool.GetStats().Segments), Is.GreaterThanOrEqualTo(0));
        Assert.That(await ReadAllAsync(pool.OpenVolume("v@s")), Is.EqualTo(old));

        await using var reopened = await OpenAsync(await TestPools.CutPowerAsync(storage, pool, 2, CrashMode.Prefix));
        Assert.That(await ReadAllAsync(reopened.OpenVolume("v")), Is.EqualTo(current));
        Assert.That(await ReadAllAsync(reopened.OpenVolume("v@s")), Is.EqualTo(old));
    }

    [Test]
    public async Task A_write_that_lands_while_its_block_is_being_copied_wins_over_the_copy()
    {
        var storage = new FaultStorage();
        var pool = await OpenAsync(storage);
        var v = await pool.CreateVolumeAsync("v", VolumeBytes);
        var model = await WriteAtRandomAsync(v, 3);
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        storage.ReadGate = (_, _) =>
        {
            started.TrySetResult();
            return release.Task;
        };
        var defrag = pool.DefragmentAsync("v");
        await started.Task.WaitAsync(TimeSpan.FromSeconds(20));
        // The defragmenter has read the map of the first step and waits on its device reads.
        var fresh = new Dictionary<int, byte[]>();
        foreach (var b in new[] { 0, 1, 7, 500, 1023, 1024, 2047 })
        {
            fresh[b] = TestPools.Pattern(700_000 + b, Block);
            await v.WriteAsync((long)b * Block, fresh[b], WriteFlags.Fua);
            fresh[b].CopyTo(model, b * Block);
        }
        storage.ReadGate = null;
        release.SetResult();
        var report = await defrag.WaitAsync(TimeSpan.FromSeconds(60));

        Assert.That(report.StoppedBecause, Is.Null);
        Assert.That(await ReadAllAsync(v), Is.EqualTo(model));
        await using var reopened = await OpenAsync(await TestPools.CutPowerAsync(storage, pool, 3, CrashMode.Subset));
        Assert.That(await ReadAllAsync(reopened.OpenVolume("v")), Is.EqualTo(model));
    }

    /// <summary>
    /// Power cut at each of the first device operations of a defragmentation (copies, commit
    /// records), then recovery, then cleaning and another defragmentation and another cut:
    /// relocation records a cut left without their commit must not join a later commit.
    /// </summary>
    [Test]
    public async Task Every_cut_during_a_defragmentation_recovers_the_data_and_a_second_cut_after_cleaning_too()
    {
        var interrupted = 0;
        for (var cut = 1; cut <= 24; cut++)
        {
            var storage = new FaultStorage();
            var pool = await OpenAsync(storage);
            var v = await pool.CreateVolumeAsync("v", VolumeBytes);
            var model = await WriteAtRandomAsync(v, 4);
            storage.CrashAtOp = storage.Writes + storage.Syncs + cut;
            try
            {
                await pool.DefragmentAsync("v");
            }
            catch (Exception) when (storage.Crashed)
            {
            }
            var image = await TestPools.CutPowerAsync(storage, pool, cut, cut % 2 == 0 ? CrashMode.Prefix : CrashMode.Subset);
            var reopened = await OpenAsync(image);
            Assert.That(await ReadAllAsync(reopened.OpenVolume("v")), Is.EqualTo(model), $"cut {cut}: after the first recovery");
            if (reopened.Recovery.UncommittedMoves > 0)
            {
                // Opening logged a commit that makes replay forget those copies: cut again at once.
                interrupted++;
                image = await TestPools.CutPowerAsync(image, reopened, cut, CrashMode.Prefix);
                reopened = await OpenAsync(image);
                Assert.That(reopened.Recovery.UncommittedMoves, Is.Zero, $"cut {cut}: the copies were forgotten");
                Assert.That(await ReadAllAsync(reopened.OpenVolume("v")), Is.EqualTo(model), $"cut {cut}: after the recovery of the recovery");
            }

            // Overwrite some, clean what the cut left dead, defragment again, cut again.
            var v2 = reopened.OpenVolume("v");
            for (var b = cut; b < VolumeBytes / Block; b += 97)
            {
                var data = TestPools.Pattern(800_000 + b, Block);
                await v2.WriteAsync((long)b * Block, data, WriteFlags.None);
                data.CopyTo(model, b * Block);
            }
            await v2.FlushAsync();
            await reopened.CleanPassAsync(reopened.GetStats().Segments);
            await reopened.DefragmentAsync("v");
            await reopened.CleanPassAsync(reopened.GetStats().Segments);
            await using var second = await OpenAsync(await TestPools.CutPowerAsync(image, reopened, cut, CrashMode.Prefix));
            Assert.That(await ReadAllAsync(second.OpenVolume("v")), Is.EqualTo(model), $"cut {cut}: after the second recovery");
        }
        TestContext.Out.WriteLine($"{interrupted} of 24 cuts left copies without their commit");
        Assert.That(interrupted, Is.GreaterThan(0), "some cuts should fall between a step's copies and its commit");
    }

    [Test]
    public async Task A_pool_short_of_free_space_stops_with_the_reason_and_keeps_the_data()
    {
        var storage = new FaultStorage();
        // 32 segments of 1 MiB; 4 KiB writes at random take a batch header each: the 8 MiB volume
        // takes 16 MiB, and with 4 MiB more too little is free for a step.
        await using var pool = await OpenAsync(storage, capacity: 32L << 20);
        var v = await pool.CreateVolumeAsync("v", VolumeBytes);
        var filler = await pool.CreateVolumeAsync("f", 4 << 20);
        var model = await WriteAtRandomAsync(v, 5);
        await filler.WriteAsync(0, TestPools.Pattern(6, 4 << 20), WriteFlags.None);

        var report = await pool.DefragmentAsync("v");

        TestContext.Out.WriteLine($"free {pool.GetStats().FreeSegments}: {report.StoppedBecause}");
        Assert.That(report.StoppedBecause, Does.Contain("short of free space"));
        Assert.That(await ReadAllAsync(v), Is.EqualTo(model));
    }

    [Test]
    public async Task A_rate_limit_spreads_the_copies_over_time()
    {
        await using var pool = await OpenAsync(new FaultStorage());
        var v = await pool.CreateVolumeAsync("v", VolumeBytes);
        var model = await WriteAtRandomAsync(v, 8);
        var sw = System.Diagnostics.Stopwatch.StartNew();
        // 8 MiB at 4 MiB/s: not done in under 2 s, however fast the copies themselves.
        var report = await pool.DefragmentAsync("v", bytesPerSecond: 4 << 20);
        Assert.That(report.BlocksMoved, Is.EqualTo(VolumeBytes / Block));
        Assert.That(sw.Elapsed, Is.GreaterThanOrEqualTo(TimeSpan.FromSeconds(1.9)));
        Assert.That(await ReadAllAsync(v), Is.EqualTo(model));
        Assert.ThrowsAsync<ArgumentOutOfRangeException>(async () => await pool.DefragmentAsync("v", bytesPerSecond: -1));
    }

    [Test]
    public async Task A_volume_grown_since_it_was_created_is_defragmented_to_its_new_end()
    {
        await using var pool = await OpenAsync(new FaultStorage());
        await pool.CreateVolumeAsync("v", VolumeBytes / 2);
        await pool.ResizeVolumeAsync("v", VolumeBytes);
        var v = pool.OpenVolume("v");
        var model = await WriteAtRandomAsync(v, 9);
        var report = await pool.DefragmentAsync("v");
        Assert.That(report.WindowsMoved, Is.EqualTo(2));
        Assert.That(report.BlocksMoved, Is.EqualTo(VolumeBytes / Block));
        Assert.That(await ReadAllAsync(v), Is.EqualTo(model));
    }

    [Test]
    public async Task A_map_entry_longer_than_one_copy_stays_and_the_pieces_around_it_move()
    {
        var storage = new FaultStorage();
        var first = await OpenAsync(storage);
        var v = await first.CreateVolumeAsync("v", 4 << 20);
        var model = await WriteAtRandomAsync(v, 10, 4 << 20);
        // 128 blocks in one write and one batch: one map entry.
        var run = TestPools.Pattern(11, 128 * Block);
        await v.WriteAsync(256 * Block, run, WriteFlags.Fua);
        run.CopyTo(model, 256 * Block);
        await first.DisposeAsync();
        // Reopened with 64 KiB batches: a copy holds 16 blocks at most, less than that entry.
        var pool = await Pool.OpenAsync(TestPools.Options(storage, maxBatchBytes: 64 << 10));
        v = pool.OpenVolume("v");

        var report = await pool.DefragmentAsync("v");

        Assert.That(report.StoppedBecause, Is.Null);
        Assert.That(report.BlocksMoved, Is.EqualTo(1024 - 128), "all but the long entry");
        Assert.That(await ReadAllAsync(v, 4 << 20), Is.EqualTo(model));
        await using var reopened = await Pool.OpenAsync(TestPools.Options(await TestPools.CutPowerAsync(storage, pool, 10, CrashMode.Prefix), maxBatchBytes: 64 << 10));
        Assert.That(await ReadAllAsync(reopened.OpenVolume("v"), 4 << 20), Is.EqualTo(model));
    }

    [Test]
    public async Task Closing_the_pool_stops_a_defragmentation_between_steps_and_the_data_stays()
    {
        var storage = new FaultStorage();
        var logged = new System.Collections.Concurrent.ConcurrentQueue<string>();
        var pool = await OpenAsync(storage, log: (_, m) => logged.Enqueue(m));
        var v = await pool.CreateVolumeAsync("v", VolumeBytes);
        var model = await WriteAtRandomAsync(v, 12);
        // Slow enough to be between steps when the pool closes.
        var defrag = pool.DefragmentAsync("v", bytesPerSecond: 1 << 20);
        await Task.Delay(300);
        await pool.DisposeAsync();
        Assert.That(async () => await defrag.WaitAsync(TimeSpan.FromSeconds(20)),
            Throws.InstanceOf<OperationCanceledException>().Or.InstanceOf<ObjectDisposedException>());
        Assert.That(logged, Has.Some.Contains("volume v: defragmentation stopped"), "the log says it stopped, and what moved");
        await using var reopened = await OpenAsync(storage.CleanImage());
        Assert.That(await ReadAllAsync(reopened.OpenVolume("v")), Is.EqualTo(model));
    }

    /// <summary>
    /// A device write error at one of the writes of a defragmentation (copies, commits),
    /// then whatever the pool can still do (clean), a power cut and recovery: the data is intact,
    /// and when a commit was what failed, the pool said so and left its copies unused.
    /// </summary>
    [Test]
    public async Task A_write_error_anywhere_in_a_defragmentation_loses_nothing_across_a_crash()
    {
        var commitFailures = 0;
        // The step's copies take about 30 writes, its commit comes after them.
        int[] points = [1, 10, 20, .. Enumerable.Range(26, 14)];
        foreach (var k in points)
        {
            var storage = new FaultStorage();
            var logged = new System.Collections.Concurrent.ConcurrentQueue<string>();
            var pool = await OpenAsync(storage, log: (_, m) => logged.Enqueue(m));
            var v = await pool.CreateVolumeAsync("v", VolumeBytes);
            var model = await WriteAtRandomAsync(v, 15);
            var writes = 0;
            storage.BeforeWrite = _ =>
            {
                if (Interlocked.Increment(ref writes) == k)
                {
                    storage.FailWrites = 1;
                }
            };
            try
            {
                await pool.DefragmentAsync("v");
            }
            catch (Exception)
            {
            }
            storage.BeforeWrite = null;
            var commitFailed = logged.Any(m => m.Contains("the commit of"));
            if (commitFailed)
            {
                // Before anything else commits: the log itself says the copies are unused.
                await using var early = await OpenAsync(storage.CrashImage(new Random(k), CrashMode.Prefix));
                Assert.That(early.Recovery.UncommittedMoves, Is.Zero, $"write error at write {k}: the failed step's copies are marked unused");
                Assert.That(await ReadAllAsync(early.OpenVolume("v")), Is.EqualTo(model), $"write error at write {k}: before cleaning");
            }
            try
            {
                await pool.CleanPassAsync(pool.GetStats().Segments);
            }
            catch (Exception)
            {
                // A pool poisoned by the error cleans nothing; recovery is what counts.
            }
            commitFailures += commitFailed ? 1 : 0;
            await using var reopened = await OpenAsync(await TestPools.CutPowerAsync(storage, pool, k, CrashMode.Prefix));
            Assert.That(await ReadAllAsync(reopened.OpenVolume("v")), Is.EqualTo(model), $"write error at write {k}");
        }
        TestContext.Out.WriteLine($"{commitFailures} of {points.Length} errors failed a commit");
        Assert.That(commitFailures, Is.GreaterThan(0), "some errors should fail a commit");
    }

    [Test]
    public async Task A_pool_short_of_space_that_holds_dead_data_is_cleaned_and_the_defragmentation_goes_on()
    {
        var storage = new FaultStorage();
        await using var pool = await OpenAsync(storage, capacity: 48L << 20);
        var v = await pool.CreateVolumeAsync("v", VolumeBytes);
        await WriteAtRandomAsync(v, 13);
        // Written again: the first copy of everything is dead, and too little is free for a step.
        var model = await WriteAtRandomAsync(v, 14);
        var passes = pool.CleanerStats.Passes;

        var report = await pool.DefragmentAsync("v");

        TestContext.Out.WriteLine($"free {pool.GetStats().FreeSegments}, cleaner passes {pool.CleanerStats.Passes - passes}: {report.StoppedBecause}");
        Assert.That(report.StoppedBecause, Is.Null);
        Assert.That(report.BlocksMoved, Is.EqualTo(VolumeBytes / Block));
        Assert.That(pool.CleanerStats.Passes, Is.GreaterThan(passes), "the cleaner made the room");
        Assert.That(await ReadAllAsync(v), Is.EqualTo(model));
    }

    [Test]
    public void A_commit_carries_its_range_and_segments_and_a_damaged_range_is_refused()
    {
        var payload = Ballast.Engine.Cleaning.Redirector.EncodeMoves(4096, 8192, [3, 7]);
        Assert.That(Ballast.Engine.Cleaning.Redirector.DecodeMoves(payload, 16, out var start, out var end, out var segments), Is.True);
        Assert.That((start, end, segments), Is.EqualTo((4096L, 8192L, new List<int> { 3, 7 })));
        Assert.That(Ballast.Engine.Cleaning.Redirector.DecodeMoves(payload.AsSpan(0, 15), 16, out _, out _, out _), Is.False, "too short");
        var backwards = Ballast.Engine.Cleaning.Redirector.EncodeMoves(8192, 4096, [3]);
        Assert.That(Ballast.Engine.Cleaning.Redirector.DecodeMoves(backwards, 16, out _, out _, out _), Is.False, "end before start");
        var negative = Ballast.Engine.Cleaning.Redirector.EncodeMoves(-1, 4096, [3]);
        Assert.That(Ballast.Engine.Cleaning.Redirector.DecodeMoves(negative, 16, out _, out _, out _), Is.False, "negative start");
        Assert.That(Ballast.Engine.Cleaning.Redirector.DecodeMoves(Ballast.Engine.Cleaning.Redirector.EncodeMoves(0, 1, [3, 99]), 16, out _, out _, out var valid), Is.True);
        Assert.That(valid, Is.EqualTo(new List<int> { 3 }), "segments outside the pool are dropped");
    }

    [Test]
    public void An_unknown_volume_is_refused()
    {
        Assert.ThrowsAsync<VolumeNotFoundException>(async () =>
        {
            await using var pool = await OpenAsync(new FaultStorage());
            await pool.DefragmentAsync("nope");
        });
    }
}
