using Ballast.Engine.Log;
using Ballast.Engine.Maps;
using Ballast.Engine.Replication;
using Ballast.Engine.Tests.FaultInjection;
using Ballast.Engine.Volumes;

namespace Ballast.Engine.Tests.Replication;

/// <summary>The engine primitives replication is built on: forwarding in LSN order, replica appends, resync copies.</summary>
public class ReplicaApplyTests
{
    private static byte[] Block(byte fill, int blocks = 1) => Enumerable.Repeat(fill, blocks * 4096).ToArray();

    private static async Task<byte[]> Read(IBlockVolume v, long offset, int length)
    {
        var b = new byte[length];
        await v.ReadAsync(offset, b);
        return b;
    }

    [Test]
    public void SetIfNewer_only_touches_blocks_older_than_the_copy()
    {
        var map = new ExtentMap(MapGeometry.For(new PoolLayout(1 << 30, 64)), 1 << 16);
        map.Set(0, 10, ExtentKind.Data, 1000, lsn: 5);
        map.Set(10, 10, ExtentKind.Data, 2000, lsn: 50);
        // blocks 20..29 never written (unmapped)
        map.SetIfNewer(5, 25, ExtentKind.Data, 9000, lsn: 20);
        Span<MapPiece> pieces = stackalloc MapPiece[16];
        var n = map.Resolve(0, 30, pieces, out _);
        var got = pieces[..n].ToArray().Select(p => (p.Kind, p.Phys, p.Count, p.Lsn)).ToList();
        Assert.That(got, Is.EqualTo(new List<(ExtentKind, long, int, long)>
        {
            (ExtentKind.Data, 1000, 5, 5),
            (ExtentKind.Data, 9000, 5, 20),  // older data replaced
            (ExtentKind.Data, 2000, 10, 50), // newer write kept
            (ExtentKind.Data, 9015, 10, 20), // unmapped filled
        }));
    }

    private sealed class RecordingForwarder : IRecordForwarder
    {
        public readonly List<ReplicatedRecord> Records = [];
        public TaskCompletionSource Gate = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public int Flushes;

        public ValueTask Forward(in ReplicatedRecord record, ReadOnlyMemory<byte> payload, bool completeInline)
        {
            lock (Records)
            {
                Records.Add(record);
            }
            return new ValueTask(Gate.Task);
        }

        public ValueTask FlushAsync(bool completeInline, CancellationToken ct)
        {
            Interlocked.Increment(ref Flushes);
            return default;
        }
    }

    [Test]
    public async Task A_forwarded_write_completes_only_when_the_replicas_have_it_and_records_go_in_LSN_order()
    {
        await using var pool = await TestPools.OpenAsync(new FaultStorage());
        var v = await pool.CreateVolumeAsync("r", 4 << 20);
        var f = new RecordingForwarder();
        v.AttachForwarder(f);
        var writes = Enumerable.Range(0, 20).Select(i => v.WriteAsync(i * 4096L, Block((byte)i), WriteFlags.None).AsTask()).ToList();
        var trim = v.TrimAsync(1 << 20, 8192).AsTask();
        await Task.Delay(200);
        Assert.That(writes.Any(w => w.IsCompleted), Is.False, "no write completes before the replicas acknowledge it");
        f.Gate.SetResult();
        await Task.WhenAll(writes);
        await trim;
        await v.FlushAsync();
        Assert.That(f.Flushes, Is.EqualTo(1));
        Assert.That(f.Records.Select(r => r.Lsn), Is.Ordered.Ascending);
        Assert.That(f.Records, Has.Count.EqualTo(21));
        Assert.That(f.Records.Last().Kind, Is.EqualTo(RecordKind.Trim));
    }

    [Test]
    public async Task A_replica_keeps_the_primarys_LSNs_refuses_old_epochs_and_ignores_duplicates()
    {
        var storage = new FaultStorage();
        var pool = await TestPools.OpenAsync(storage);
        var v = await pool.CreateVolumeAsync("r", 4 << 20);
        await pool.SetEpochAsync("r", 3);
        await v.ApplyReplicatedAsync(new ReplicatedRecord(RecordKind.Data, 100, 3, 0, 2, false), Block(7, 2));
        await v.ApplyReplicatedAsync(new ReplicatedRecord(RecordKind.Data, 100, 3, 0, 2, false), Block(8, 2));
        Assert.That(await Read(v, 0, 8192), Is.All.EqualTo(7), "a duplicate LSN changes nothing");
        var e = Assert.ThrowsAsync<BlockVolumeException>(async () => await v.ApplyReplicatedAsync(new ReplicatedRecord(RecordKind.Data, 101, 2, 0, 1, false), Block(9)));
        Assert.That(e!.Error, Is.EqualTo(BlockError.Fenced));
        await v.ApplyReplicatedAsync(new ReplicatedRecord(RecordKind.Zero, 105, 3, 1, 1, true), default);
        Assert.That(v.Lsn, Is.EqualTo(105));
        var changed = v.GetChangedExtents(100);
        Assert.That(changed.Single(), Is.EqualTo(new ChangedExtent(4096, 4096, AllocationState.Zero, 105)));
        await pool.DisposeAsync();
        await using var reopened = await TestPools.OpenAsync(storage.CleanImage());
        var rv = reopened.OpenVolume("r");
        Assert.That(rv.Lsn, Is.EqualTo(105), "the LSN survives a restart");
        Assert.That(await Read(rv, 0, 4096), Is.All.EqualTo(7));
        Assert.That(await Read(rv, 4096, 4096), Is.All.EqualTo(0));
    }

    [Test]
    public async Task A_resync_copy_never_overwrites_a_newer_live_write_also_after_replay()
    {
        var storage = new FaultStorage();
        var pool = await TestPools.OpenAsync(storage);
        var v = await pool.CreateVolumeAsync("r", 4 << 20);
        await v.ApplyReplicatedAsync(new ReplicatedRecord(RecordKind.Data, 10, 0, 0, 1, false), Block(1));
        await v.ApplyReplicatedAsync(new ReplicatedRecord(RecordKind.Data, 60, 0, 1, 1, false), Block(2));
        // The resync copy of blocks 0..2 as the primary held them at LSN 50.
        await v.ApplyResyncAsync(RecordKind.Data, 0, 0, 3, Block(5, 3), dataLsn: 50);
        async Task Check(IBlockVolume vol)
        {
            Assert.That(await Read(vol, 0, 4096), Is.All.EqualTo(5), "older block replaced");
            Assert.That(await Read(vol, 4096, 4096), Is.All.EqualTo(2), "newer live write kept");
            Assert.That(await Read(vol, 8192, 4096), Is.All.EqualTo(5), "unwritten block filled");
        }
        await Check(v);
        Assert.That(v.Lsn, Is.EqualTo(60), "a resync copy does not move the volume's LSN");
        await v.FlushAsync();
        await pool.AbandonAsync();
        await using var reopened = await TestPools.OpenAsync(storage.CrashImage(new Random(1), CrashMode.Prefix));
        await Check(reopened.OpenVolume("r"));
        Assert.That(reopened.OpenVolume("r").Lsn, Is.EqualTo(60));
    }

    [Test]
    public async Task Malformed_replicated_records_are_refused()
    {
        await using var pool = await TestPools.OpenAsync(new FaultStorage());
        var v = await pool.CreateVolumeAsync("r", 1 << 20);
        Assert.ThrowsAsync<BlockVolumeException>(async () => await v.ApplyReplicatedAsync(new ReplicatedRecord(RecordKind.Data, 1, 0, 255, 2, false), Block(1, 2)));
        Assert.ThrowsAsync<BlockVolumeException>(async () => await v.ApplyReplicatedAsync(new ReplicatedRecord(RecordKind.Data, 1, 0, 0, 2, false), Block(1, 1)));
        Assert.ThrowsAsync<BlockVolumeException>(async () => await v.ApplyReplicatedAsync(new ReplicatedRecord(RecordKind.Data, 1, 0, -1, 1, false), Block(1)));
        Assert.ThrowsAsync<BlockVolumeException>(async () => await v.ApplyReplicatedAsync(new ReplicatedRecord(RecordKind.Seal, 1, 0, 0, 1, false), default));
        Assert.That(v.Lsn, Is.Zero);
    }
}
