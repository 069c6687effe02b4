using Ballast.Engine;
using Ballast.Engine.Volumes;
using Ballast.Iscsi.Reservations;
using Ballast.Iscsi.Scsi;

namespace Ballast.Iscsi.Tests.Support;

/// <summary>Runs SCSI commands straight through the handlers (no iSCSI) against a volume.</summary>
public sealed class ScsiHarness : IAsyncDisposable
{
    private readonly string? _dir;
    private readonly Pool? _pool;

    private ScsiHarness(string? dir, Pool? pool, IBlockVolume volume, string? stateDir)
    {
        _dir = dir;
        _pool = pool;
        Volume = volume;
        StateDirectory = stateDir;
        Store = stateDir is null ? null : new ReservationStore(stateDir);
        Lu = new LogicalUnit(volume, Store) { MaxTransferLength = 8 << 20 };
        Nexus = AddNexus("iqn.2026-11.test:a,i,0x000001", "iqn.2026-11.io.ballast:v,t,0x0001");
    }

    internal IBlockVolume Volume { get; }
    internal LogicalUnit Lu { get; }
    internal LunNexus Nexus { get; }
    internal ReservationStore? Store { get; }
    public string? StateDirectory { get; }
    public Pool? Pool => _pool;

    internal LunNexus AddNexus(string initiatorPort, string targetPort)
    {
        var n = new LunNexus(Lu, 0, initiatorPort, targetPort, new object());
        Lu.Attach(n);
        return n;
    }

    public static async Task<ScsiHarness> CreateAsync(long size = 64L << 20, int blockSize = 512, bool snapshot = false)
    {
        var dir = Directory.CreateTempSubdirectory("ballast-scsi-").FullName;
        var pool = await Pool.OpenAsync(new PoolOptions { Path = Path.Combine(dir, "pool"), Capacity = 512L << 20 });
        IBlockVolume v = await pool.CreateVolumeAsync("v", size, blockSize);
        if (snapshot)
        {
            v = await pool.CreateSnapshotAsync("v", "s");
        }
        return new ScsiHarness(dir, pool, v, Path.Combine(dir, "state"));
    }

    internal static ScsiHarness Over(IBlockVolume volume) => new(null, null, volume, null);

    internal async Task<ScsiTask> RunAsync(byte[] cdb, byte[]? dataOut = null, int readLength = 0, LunNexus? nexus = null)
    {
        var t = new ScsiTask();
        cdb.CopyTo(t.Cdb, 0);
        t.CdbLength = 16;
        t.Nexus = nexus ?? Nexus;
        t.SessionLuns = [t.Nexus];
        if (dataOut != null)
        {
            t.WriteBit = true;
            t.EnsureBuffer(dataOut.Length);
            dataOut.CopyTo(t.Buffer!, 0);
            t.DataOutLength = dataOut.Length;
            t.ExpectedLength = (uint)dataOut.Length;
        }
        else
        {
            t.ReadBit = readLength > 0;
            t.ExpectedLength = (uint)readLength;
        }
        await t.RunDetachedAsync();
        return t;
    }

    internal static (SenseKey Key, byte Asc, byte Ascq) SenseOf(ScsiTask t) => Sense.Parse(t.SenseData);

    internal static byte[] DataOf(ScsiTask t) => t.Buffer.AsSpan(0, t.DataInLength).ToArray();

    public async ValueTask DisposeAsync()
    {
        if (_pool != null)
        {
            await _pool.DisposeAsync();
        }
        if (_dir != null)
        {
            Directory.Delete(_dir, true);
        }
    }
}

/// <summary>A volume whose every operation fails with one BlockError (for the sense mapping).</summary>
internal sealed class FailingVolume(BlockError error) : IBlockVolume
{
    public string Name => "failing";
    public Guid Uid { get; } = Guid.NewGuid();
    public long Size => 1 << 20;
    public int LogicalBlockSize => 512;
    public VolumeFeatures Features => VolumeFeatures.Trim | VolumeFeatures.WriteZeroes;
    private BlockVolumeException Fail() => new(error, $"injected {error}");
    public ValueTask ReadAsync(long offset, Memory<byte> destination, CancellationToken cancellationToken = default) => throw Fail();
    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> source, WriteFlags flags, CancellationToken cancellationToken = default) => throw Fail();
    public ValueTask FlushAsync(CancellationToken cancellationToken = default) => throw Fail();
    public ValueTask TrimAsync(long offset, long length, CancellationToken cancellationToken = default) => throw Fail();
    public ValueTask WriteZeroesAsync(long offset, long length, bool mayDeallocate, CancellationToken cancellationToken = default) => throw Fail();
    public int GetAllocation(long offset, long length, Span<AllocationRange> ranges) => throw Fail();
}
