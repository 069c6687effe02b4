namespace Ballast.Engine;

/// <summary>A snapshot of pool-level figures for status, metrics and benchmarks.</summary>
public sealed record PoolStats
{
    public long CapacityBytes { get; init; }
    public int SegmentSize { get; init; }
    public int Segments { get; init; }
    public int FreeSegments { get; init; }
    public int LogSegments { get; init; }
    public int CheckpointSegments { get; init; }
    /// <summary>Bytes in log segments (live plus not yet cleaned).</summary>
    public long UsedBytes { get; init; }
    /// <summary>Estimated live data bytes (written minus known overwritten/trimmed; exact after a cleaner pass).</summary>
    public long LiveBytes { get; init; }
    public long ReclaimableBytes { get; init; }
    public long DeviceBytesWritten { get; init; }
    public long ClientBytesWritten { get; init; }
    public long CleanerBytesMoved { get; init; }
    /// <summary>Device bytes written per client byte (log headers, cleaner copies and checkpoints included).</summary>
    public double WriteAmplification { get; init; }
    public long Batches { get; init; }
    /// <summary>Batches written by a client's own thread (a lone write that found the log idle).</summary>
    public long InlineBatches { get; init; }

    /// <summary>Lone writes acknowledged before their device write (see PoolOptions.AckBeforeDeviceWrite).</summary>
    public long EarlyAcks { get; init; }

    /// <summary>Large client payload bytes written from the client's buffer, not copied into a batch (see LargeBufferPool).</summary>
    public long BorrowedBytes { get; init; }
    public long Syncs { get; init; }
    public long Checkpoints { get; init; }
    public long LastCheckpointBytes { get; init; }
    public double LastCheckpointMs { get; init; }
    public long CleanerPasses { get; init; }
    public long CleanerSegmentsFreed { get; init; }
    /// <summary>Device reads the cleaner's copies took.</summary>
    public long CleanerReads { get; init; }
    /// <summary>Writes that waited for the cleaner because no segment was free above the reserve.</summary>
    public long WritesWaitedForSpace { get; init; }
    /// <summary>Client blocks written into dead blocks of older segments (slack-space recycling).</summary>
    public long RecycledBlocksWritten { get; init; }
    /// <summary>Zeroes written into never-written free space ahead of the log (not part of write amplification: once per segment).</summary>
    public long PreparedBytesZeroed { get; init; }
    /// <summary>Free segments whose space is known to be written, ready for the log.</summary>
    public int PreparedFreeSegments { get; init; }
    public int Volumes { get; init; }
    public bool Poisoned { get; init; }
}
