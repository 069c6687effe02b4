using Ballast.Engine.Tests.FaultInjection;
using Ballast.Engine.Volumes;

namespace Ballast.Engine.Tests.Volumes;

public class SnapshotCloneTests
{
    private static async Task<byte[]> ReadAsync(IBlockVolume v, long offset, int length)
    {
        var b = new byte[length];
        await v.ReadAsync(offset, b);
        return b;
    }

    [Test]
    public async Task A_snapshot_is_read_only_and_keeps_the_data_of_its_moment()
    {
        await using var pool = await TestPools.OpenAsync(new FaultStorage());
        var v = await pool.CreateVolumeAsync("db", 4 << 20);
        var a = TestPools.Pattern(1, 1 << 20);
        await v.WriteAsync(0, a, WriteFlags.None);
        var snap = await pool.CreateSnapshotAsync("db", "s1");
        Assert.That(snap.Name, Is.EqualTo("db@s1"));
        Assert.That(snap.Features.HasFlag(VolumeFeatures.ReadOnly), Is.True);
        await v.WriteAsync(4096, TestPools.Pattern(2, 8192), WriteFlags.None);
        await v.TrimAsync(65536, 65536);
        Assert.That(await ReadAsync(snap, 0, 1 << 20), Is.EqualTo(a));
        var e = Assert.ThrowsAsync<BlockVolumeException>(async () => await snap.WriteAsync(0, new byte[4096], WriteFlags.None));
        Assert.That(e!.Error, Is.EqualTo(BlockError.ReadOnly));
        Assert.That(pool.Describe("db").Snapshots, Is.EqualTo(new[] { "db@s1" }));
    }

    [Test]
    public async Task Snapshot_creation_costs_the_same_for_a_big_map_as_for_an_empty_one()
    {
        await using var pool = await TestPools.OpenAsync(new FaultStorage(), capacity: 256L << 20);
        var v = await pool.CreateVolumeAsync("big", 128 << 20);
        for (var i = 0; i < 4000; i++)
        {
            await v.WriteAsync(i * 8192L, TestPools.Pattern(i, 4096), WriteFlags.None); // 4000 separate extents
        }
        var lsnBefore = pool.GetStats().DeviceBytesWritten;
        await pool.CreateSnapshotAsync("big", "s");
        // The snapshot writes one metadata record, not a copy of the map.
        Assert.That(pool.GetStats().DeviceBytesWritten - lsnBefore, Is.LessThanOrEqualTo(2 * 4096));
    }

    [Test]
    public async Task A_clone_starts_as_the_snapshot_and_diverges()
    {
        await using var pool = await TestPools.OpenAsync(new FaultStorage());
        var v = await pool.CreateVolumeAsync("base", 4 << 20);
        var a = TestPools.Pattern(3, 1 << 20);
        await v.WriteAsync(0, a, WriteFlags.None);
        await pool.CreateSnapshotAsync("base", "gold");
        var c = await pool.CloneAsync("base@gold", "copy");
        Assert.That(await ReadAsync(c, 0, 1 << 20), Is.EqualTo(a));
        var b = TestPools.Pattern(4, 4096);
        await c.WriteAsync(0, b, WriteFlags.None);
        Assert.That(await ReadAsync(c, 0, 4096), Is.EqualTo(b));
        Assert.That(await ReadAsync(v, 0, 4096), Is.EqualTo(a.AsSpan(0, 4096).ToArray()));
        Assert.That(await ReadAsync(pool.OpenVolume("base@gold"), 0, 4096), Is.EqualTo(a.AsSpan(0, 4096).ToArray()));
        Assert.That(pool.Describe("copy").Parent, Is.EqualTo("base@gold"));
    }

    [Test]
    public async Task Snapshots_and_clones_survive_restart_by_checkpoint_and_by_replay([Values] bool checkpoint)
    {
        var storage = new FaultStorage();
        var pool = await TestPools.OpenAsync(storage);
        var v = await pool.CreateVolumeAsync("v", 4 << 20);
        var a = TestPools.Pattern(5, 65536);
        await v.WriteAsync(0, a, WriteFlags.None);
        await pool.CreateSnapshotAsync("v", "s");
        var b = TestPools.Pattern(6, 65536);
        await v.WriteAsync(0, b, WriteFlags.None);
        var c = await pool.CloneAsync("v@s", "c");
        var cc = TestPools.Pattern(7, 4096);
        await c.WriteAsync(4096, cc, WriteFlags.Fua);
        if (checkpoint)
        {
            await pool.CheckpointAsync();
        }
        storage.Crash();
        await pool.AbandonAsync();
        await using var reopened = await TestPools.OpenAsync(storage.CrashImage(new Random(1), CrashMode.Prefix));
        Assert.That(await ReadAsync(reopened.OpenVolume("v@s"), 0, 65536), Is.EqualTo(a));
        Assert.That(await ReadAsync(reopened.OpenVolume("v"), 0, 65536), Is.EqualTo(b));
        var expectClone = (byte[])a.Clone();
        cc.CopyTo(expectClone, 4096);
        Assert.That(await ReadAsync(reopened.OpenVolume("c"), 0, 65536), Is.EqualTo(expectClone));
        // The reloaded maps keep sharing: writing the volume must not change the snapshot.
        await reopened.OpenVolume("v").WriteAsync(0, new byte[4096], WriteFlags.None);
        Assert.That(await ReadAsync(reopened.OpenVolume("v@s"), 0, 4096), Is.EqualTo(a.AsSpan(0, 4096).ToArray()));
    }

    [Test]
    public async Task A_volume_with_snapshots_is_deleted_only_with_them()
    {
        await using var pool = await TestPools.OpenAsync(new FaultStorage());
        await pool.CreateVolumeAsync("v", 1 << 20);
        await pool.CreateSnapshotAsync("v", "s");
        Assert.ThrowsAsync<InvalidOperationException>(() => pool.DeleteVolumeAsync("v"));
        await pool.DeleteVolumeAsync("v", withSnapshots: true);
        Assert.That(pool.ListVolumes(), Is.Empty);
        Assert.Throws<VolumeNotFoundException>(() => pool.OpenVolume("v@s"));
    }
}
