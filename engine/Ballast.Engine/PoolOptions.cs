using Ballast.Engine.Storage;

namespace Ballast.Engine;

public enum PoolLogLevel
{
    Debug,
    Information,
    Warning,
    Error,
}

/// <summary>Settings of a pool. Defaults suit a production daemon; tests shrink segments and intervals.</summary>
public sealed class PoolOptions
{
    /// <summary>The pool file (or block device). Created when absent.</summary>
    public required string Path { get; init; }

    /// <summary>Capacity of a new pool in bytes; 0 picks 90% of the free space of the filesystem (at most 4 TiB).</summary>
    public long Capacity { get; init; }

    /// <summary>
    /// Segment size of a new pool (power of two, 1 MiB..1 GiB); 0 picks one from the capacity:
    /// about 512 segments, between 4 MiB and 64 MiB. Many segments keep the free segments the
    /// cleaner must hold back a small share of the pool.
    /// </summary>
    public int SegmentSize { get; init; }

    internal int SegmentSizeFor(long capacity)
    {
        if (SegmentSize > 0)
        {
            return SegmentSize;
        }
        var want = Math.Clamp(capacity / 512, 4L << 20, 64L << 20);
        return (int)(1L << (63 - System.Numerics.BitOperations.LeadingZeroCount((ulong)want)));
    }

    /// <summary>
    /// A client write up to this size whose caller has nothing else in flight (WriteFlags.Alone)
    /// and that finds the log idle is written by the calling thread instead of waking the
    /// appender thread (one wake-up fewer at queue depth 1); 0 turns it off.
    /// </summary>
    public int InlineWriteMaxBytes { get; init; } = 64 << 10;

    /// <summary>
    /// Such a lone write without FUA, from a caller that holds a completion batch (the NBD receive
    /// loop), is acknowledged before its device write, which follows the reply: the client's next
    /// request overlaps it. Durability is unchanged (only FLUSH and FUA promise it, and a FLUSH
    /// waits for the log); if that device write fails, the pool stops accepting writes and the
    /// next FLUSH fails. False acknowledges every write after its device write.
    /// </summary>
    public bool AckBeforeDeviceWrite { get; init; } = true;

    /// <summary>Largest group-commit batch payload.</summary>
    public int MaxBatchBytes { get; init; } = 4 << 20;

    /// <summary>
    /// Write a checkpoint after this many bytes of log (bounds replay time after a crash: about
    /// 1.6 s to replay 800 MiB of 4 KiB writes on the bench machine, so 512 MiB keeps a restart
    /// under 2 s; a checkpoint of a volume with 2.4 million extents is 47 MiB).
    /// </summary>
    public long CheckpointEveryBytes { get; init; } = 512L << 20;

    /// <summary>And at least this often while the pool is being written.</summary>
    public TimeSpan CheckpointInterval { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>Cleaner copy rate limit while space is not critical (bytes per second).</summary>
    public long CleanerBytesPerSecond { get; init; } = 128L << 20;

    /// <summary>
    /// The cleaner starts when free segments drop below this fraction of the pool (never below
    /// the appender's reserve plus one)… Kept low: space held free is space the live data
    /// cannot spread over, so the victims are fuller. A 1 GiB pool 80% full under random
    /// overwrites: WA 4.15 with 5%/8%, 3.69 with 2%/3% (bench/RESULTS.md).
    /// </summary>
    public double CleanerStartFree { get; init; } = 0.02;

    /// <summary>…and works until this fraction is free, at least one segment more (or nothing worth cleaning is left).</summary>
    public double CleanerTargetFree { get; init; } = 0.03;

    /// <summary>
    /// Slack-space recycling: once free segments are down to the cleaner's start, client writes
    /// go into dead blocks of older segments the cleaner found, instead of the cleaner copying
    /// live data out to free whole segments (which costs u/(1-u) extra writes: 3x at 75% live).
    /// Writes into holes are scattered, so this is only for a nearly full pool.
    /// </summary>
    public bool RecycleHoles { get; init; } = true;

    /// <summary>
    /// Holes are handed out only while the victims a cleaning pass would copy are at least this
    /// live: below it, copying costs at most 1.5 extra writes per block freed, all sequential,
    /// where writes into holes are scattered. Tests set 0 to recycle whatever the fill.
    /// </summary>
    internal double RecycleAboveLive { get; init; } = 0.6;

    /// <summary>
    /// How long a write may wait for the cleaner when no segment is free before it fails with
    /// ENOSPC. Only with background maintenance (otherwise nothing would free space).
    /// </summary>
    public TimeSpan SpaceWaitTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Run the background maintenance loop (checkpoints, cleaner). Tests may drive it by hand.</summary>
    public bool BackgroundMaintenance { get; init; } = true;

    /// <summary>Verify every live block in the background after opening a pool that was not shut down cleanly.</summary>
    public bool ScrubAfterCrash { get; init; } = true;

    /// <summary>
    /// Punch holes in segments the cleaner frees, giving the space back to the filesystem. Off by
    /// default: rewriting space that is already written avoids extent conversions that make
    /// every fdatasync commit the filesystem journal (187 against 81 µs per sync on ext4 here).
    /// </summary>
    public bool ReturnFreedSpace { get; init; }

    /// <summary>
    /// Free space kept written with zeroes ahead of the log (rounded to whole segments; 0 turns
    /// it off). On ext4 and xfs, writes into never-written space make every fdatasync commit the
    /// journal; each segment is zeroed once in the pool's life, just before its first use.
    /// </summary>
    public long PrepareAheadBytes { get; init; } = 256L << 20;

    /// <summary>Most bytes per second the preparer zeroes (the device's write-zeroes offload counts too).</summary>
    public long PrepareBytesPerSecond { get; init; } = 512L << 20;

    /// <summary>Threads that run blocking device reads.</summary>
    public int ReadThreads { get; init; } = 32;

    /// <summary>Issue reads through io_uring where the kernel allows it (the threads then take only the overflow).</summary>
    public bool IoUring { get; init; } = true;

    /// <summary>Supplies the device instead of opening <see cref="Path"/> (tests inject faults this way).</summary>
    public Func<long, IPoolStorage>? StorageFactory { get; init; }

    /// <summary>Receives the engine's log events.</summary>
    public Action<PoolLogLevel, string>? Log { get; init; }
}
