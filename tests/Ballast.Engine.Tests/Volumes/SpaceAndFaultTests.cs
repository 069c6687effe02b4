using Ballast.Engine.Interop;
using Ballast.Engine.Tests.FaultInjection;
using Ballast.Engine.Volumes;

namespace Ballast.Engine.Tests.Volumes;

public class SpaceAndFaultTests
{
    private static async Task<byte[]> ReadAsync(IBlockVolume v, long offset, int length)
    {
        var b = new byte[length];
        await v.ReadAsync(offset, b);
        return b;
    }

    [Test]
    public async Task A_full_pool_refuses_writes_keeps_acknowledged_data_and_recovers_after_trim()
    {
        await using var pool = await TestPools.OpenAsync(new FaultStorage(), capacity: 24L << 20);
        var v = await pool.CreateVolumeAsync("v", 64 << 20); // thin: larger than the pool
        var written = 0L;
        BlockVolumeException? full = null;
        for (var i = 0; i < 64 && full == null; i++)
        {
            try
            {
                await v.WriteAsync(i * (1L << 20), TestPools.Pattern(i, 1 << 20), WriteFlags.None);
                written = (i + 1) * (1L << 20);
            }
            catch (BlockVolumeException e)
            {
                full = e;
            }
        }
        Assert.That(full, Is.Not.Null);
        Assert.That(full!.Error, Is.EqualTo(BlockError.NoSpace));
        TestContext.Out.WriteLine($"{written >> 20} MiB written before: {full.Message}");
        Assert.That(full.Message, Does.Contain("full"));
        for (var i = 0; i < written >> 20; i++)
        {
            Assert.That(await ReadAsync(v, i * (1L << 20), 4096), Is.EqualTo(TestPools.Pattern(i, 1 << 20).AsSpan(0, 4096).ToArray()));
        }
        await v.TrimAsync(0, written / 2);
        await pool.CleanAsync();
        await v.WriteAsync(written, TestPools.Pattern(99, 1 << 20), WriteFlags.Fua);
        Assert.That(await ReadAsync(v, written, 1 << 20), Is.EqualTo(TestPools.Pattern(99, 1 << 20)));
    }

    [Test]
    public async Task A_failed_device_write_fails_only_its_batch()
    {
        var storage = new FaultStorage();
        await using var pool = await TestPools.OpenAsync(storage);
        var v = await pool.CreateVolumeAsync("v", 4 << 20);
        storage.FailWrites = 1;
        var e = Assert.ThrowsAsync<BlockVolumeException>(async () => await v.WriteAsync(0, TestPools.Pattern(1, 4096), WriteFlags.None));
        Assert.That(e!.Error, Is.EqualTo(BlockError.Io));
        await v.WriteAsync(0, TestPools.Pattern(2, 4096), WriteFlags.Fua);
        Assert.That(await ReadAsync(v, 0, 4096), Is.EqualTo(TestPools.Pattern(2, 4096)));
    }

    [Test]
    public async Task A_device_that_runs_out_of_space_reports_no_space()
    {
        var storage = new FaultStorage();
        await using var pool = await TestPools.OpenAsync(storage);
        var v = await pool.CreateVolumeAsync("v", 4 << 20);
        storage.FailWrites = 1;
        storage.FaultErrno = Libc.ENOSPC;
        var e = Assert.ThrowsAsync<BlockVolumeException>(async () => await v.WriteAsync(0, TestPools.Pattern(1, 4096), WriteFlags.None));
        Assert.That(e!.Error, Is.EqualTo(BlockError.NoSpace));
    }

    [Test]
    public async Task A_failed_fsync_poisons_the_pool_and_reopening_restores_the_last_good_flush()
    {
        var storage = new FaultStorage();
        var pool = await TestPools.OpenAsync(storage);
        Assert.That(await pool.ProbeAsync(TimeSpan.FromSeconds(5)), Is.True, "a working pool answers the health probe");
        var v = await pool.CreateVolumeAsync("v", 4 << 20);
        var a = TestPools.Pattern(1, 8192);
        await v.WriteAsync(0, a, WriteFlags.None);
        await v.FlushAsync();
        await v.WriteAsync(0, TestPools.Pattern(2, 8192), WriteFlags.None);
        storage.FailSyncs = 1;
        var e = Assert.ThrowsAsync<BlockVolumeException>(async () => await v.FlushAsync());
        Assert.That(e!.Error, Is.EqualTo(BlockError.Io));
        e = Assert.ThrowsAsync<BlockVolumeException>(async () => await v.WriteAsync(8192, new byte[4096], WriteFlags.None));
        Assert.That(e!.Message, Does.Contain("stopped accepting writes"));
        Assert.That(pool.GetStats().Poisoned, Is.True);
        Assert.That(await pool.ProbeAsync(TimeSpan.FromSeconds(5)), Is.False, "the health probe (systemd's watchdog) sees the failed write path");
        await pool.AbandonAsync();
        await using var reopened = await TestPools.OpenAsync(storage.CrashImage(new Random(1), CrashMode.Prefix));
        Assert.That(await ReadAsync(reopened.OpenVolume("v"), 0, 8192), Is.EqualTo(a));
    }

    [Test]
    public async Task A_checkpoint_whose_superblock_write_fails_leaves_the_old_one_and_its_replay_chain_intact()
    {
        var storage = new FaultStorage();
        var pool = await TestPools.OpenAsync(storage);
        var v = await pool.CreateVolumeAsync("v", 32 << 20);
        var first = TestPools.Pattern(1, 8 << 20);
        await v.WriteAsync(0, first, WriteFlags.None);
        await v.FlushAsync();
        await pool.CheckpointAsync();
        var sb = pool.SuperblockInUse;
        (var replayStart, var checkpoint, var generation) = (sb.ReplayStart, sb.CheckpointSegments.ToArray(), sb.Generation);
        await v.WriteAsync(0, first.AsMemory(0, 1 << 20), WriteFlags.None);
        storage.FailSuperblockWrites = 1;
        Assert.ThrowsAsync<Ballast.Engine.Storage.StorageException>(() => pool.CheckpointAsync());
        sb = pool.SuperblockInUse;
        Assert.That((sb.ReplayStart, sb.Generation), Is.EqualTo((replayStart, generation)), "the replay start the disk holds");
        Assert.That(sb.CheckpointSegments, Is.EqualTo(checkpoint), "the checkpoint the disk names");
        // The next checkpoint must not release the one the disk still names, and the log must
        // not reuse what the old replay start still covers: write enough to take every free
        // segment the lowest-first allocator would hand out.
        await pool.CheckpointAsync();
        var second = TestPools.Pattern(2, 24 << 20);
        await v.WriteAsync(8 << 20, second, WriteFlags.None);
        await v.FlushAsync();
        await pool.CleanPassAsync(pool.GetStats().Segments);
        await pool.AbandonAsync();
        await using var reopened = await TestPools.OpenAsync(storage.CrashImage(new Random(1), CrashMode.Prefix));
        var r = reopened.OpenVolume("v");
        Assert.That(await ReadAsync(r, 0, 8 << 20), Is.EqualTo(first));
        Assert.That(await ReadAsync(r, 8 << 20, 24 << 20), Is.EqualTo(second));
    }

    [Test]
    public async Task Resize_grows_and_refuses_to_shrink_over_data_unless_forced()
    {
        await using var pool = await TestPools.OpenAsync(new FaultStorage());
        var v = await pool.CreateVolumeAsync("v", 4 << 20);
        await v.WriteAsync(3 << 20, TestPools.Pattern(1, 4096), WriteFlags.None);
        await pool.ResizeVolumeAsync("v", 64 << 20);
        Assert.That(v.Size, Is.EqualTo(64L << 20));
        await v.WriteAsync(60 << 20, TestPools.Pattern(2, 4096), WriteFlags.None);
        var e = Assert.ThrowsAsync<InvalidOperationException>(() => pool.ResizeVolumeAsync("v", 2 << 20));
        Assert.That(e!.Message, Does.Contain("holds data beyond"));
        await pool.ResizeVolumeAsync("v", 2 << 20, force: true);
        await pool.ResizeVolumeAsync("v", 8 << 20);
        Assert.That(await ReadAsync(v, 3 << 20, 4096), Is.All.EqualTo(0), "data beyond a forced shrink is gone");
    }

    [Test]
    public async Task Changed_extents_since_an_lsn_cover_exactly_the_later_writes()
    {
        await using var pool = await TestPools.OpenAsync(new FaultStorage());
        var v = await pool.CreateVolumeAsync("v", 16 << 20);
        for (var i = 0; i < 10; i++)
        {
            await v.WriteAsync(i * 65536L, TestPools.Pattern(i, 4096), WriteFlags.None);
        }
        var mark = v.Lsn;
        await v.WriteAsync(3 * 65536L, TestPools.Pattern(30, 8192), WriteFlags.None);
        await v.TrimAsync(7 * 65536L, 4096);
        await v.WriteZeroesAsync(12 << 20, 1 << 20, mayDeallocate: false);
        var changed = v.GetChangedExtents(mark);
        Assert.That(changed.Select(c => (c.Offset, c.Length, c.State)), Is.EqualTo(new[]
        {
            (3 * 65536L, 8192L, AllocationState.Data),
            (7 * 65536L, 4096L, AllocationState.Hole),
            (12L << 20, 1L << 20, AllocationState.Zero),
        }));
        Assert.That(v.GetChangedExtents(v.Lsn), Is.Empty);
    }
}
