using Ballast.Engine.Storage;
using Ballast.Engine.Tests.FaultInjection;

namespace Ballast.Engine.Tests;

/// <summary>Small pools on a fault-injecting memory device (fast) or a real file, for tests.</summary>
public static class TestPools
{
    public const int SegmentSize = 1 << 20;

    private static readonly PoolOptions Defaults = new() { Path = "" };

    public static PoolOptions Options(IPoolStorage storage, long capacity = 64L << 20, bool background = false, Action<PoolLogLevel, string>? log = null, double? recycleAboveLive = null, int maxBatchBytes = 256 << 10, long? prepareAheadBytes = null, bool ackBeforeDeviceWrite = true) => new()
    {
        AckBeforeDeviceWrite = ackBeforeDeviceWrite,
        RecycleAboveLive = recycleAboveLive ?? Defaults.RecycleAboveLive,
        Path = "memory",
        StorageFactory = _ => storage,
        Capacity = capacity,
        SegmentSize = SegmentSize,
        MaxBatchBytes = maxBatchBytes,
        PrepareAheadBytes = prepareAheadBytes ?? Defaults.PrepareAheadBytes,
        BackgroundMaintenance = background,
        ScrubAfterCrash = false,
        CheckpointEveryBytes = 4 << 20,
        CheckpointInterval = TimeSpan.FromMilliseconds(200),
        CleanerBytesPerSecond = 1L << 40,
        Log = log,
    };

    public static Task<Pool> OpenAsync(FaultStorage storage, long capacity = 64L << 20, bool background = false, Action<PoolLogLevel, string>? log = null) =>
        Pool.OpenAsync(Options(storage, capacity, background, log));

    /// <summary>
    /// Cuts the power under <paramref name="pool"/>: the device takes no more writes, the pool is
    /// dropped without closing, and what a crash would have left of the device is returned.
    /// </summary>
    public static async Task<FaultStorage> CutPowerAsync(FaultStorage storage, Pool pool, int seed, CrashMode mode)
    {
        storage.Crash();
        await pool.AbandonAsync();
        return storage.CrashImage(new Random(seed), mode);
    }

    public static byte[] Pattern(int seed, int length)
    {
        var b = new byte[length];
        new Random(seed).NextBytes(b);
        return b;
    }
}
