namespace Ballast.Engine.Volumes;

/// <summary>Per-volume I/O counters and latency histograms, updated with interlocked adds (no allocation).</summary>
public sealed class VolumeCounters
{
    public long Reads;
    public long ReadBytes;
    public long Writes;
    public long WriteBytes;
    public long Flushes;
    public long Trims;
    public long TrimBytes;
    public long Zeroes;
    public long ZeroBytes;
    public long ChecksumErrors;
    /// <summary>Requests that ended with an error.</summary>
    public long Errors;
    /// <summary>Requests the volume is working on now.</summary>
    public long InFlight;

    public readonly LatencyHistogram ReadLatency = new();
    public readonly LatencyHistogram WriteLatency = new();
    public readonly LatencyHistogram FlushLatency = new();
    /// <summary>Trims and write-zeroes.</summary>
    public readonly LatencyHistogram TrimLatency = new();
}
