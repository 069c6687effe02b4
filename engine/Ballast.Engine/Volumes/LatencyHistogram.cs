using System.Diagnostics;

namespace Ballast.Engine.Volumes;

/// <summary>
/// Request latency in power-of-two buckets from 16 µs to about 1 s, plus a count and a sum, in the
/// shape Prometheus histograms take. Recording is two interlocked adds: safe on the hot path.
/// </summary>
public sealed class LatencyHistogram
{
    /// <summary>Upper bound of bucket i is 2^(i+4) µs; the last bucket has no bound.</summary>
    public const int Buckets = 18;

    private readonly long[] _counts = new long[Buckets];
    private long _sumMicros;

    public static long UpperBoundMicros(int bucket) => bucket >= Buckets - 1 ? long.MaxValue : 1L << (bucket + 4);

    /// <summary>Records the time since <paramref name="startTimestamp"/> (Stopwatch.GetTimestamp()).</summary>
    public void RecordSince(long startTimestamp)
    {
        var micros = (long)Stopwatch.GetElapsedTime(startTimestamp).TotalMicroseconds;
        Record(micros);
    }

    public void Record(long micros)
    {
        var bucket = micros <= 16 ? 0 : Math.Min(Buckets - 1, 64 - System.Numerics.BitOperations.LeadingZeroCount((ulong)(micros - 1)) - 4);
        Interlocked.Increment(ref _counts[bucket]);
        Interlocked.Add(ref _sumMicros, micros);
    }

    public long SumMicros => Interlocked.Read(ref _sumMicros);

    /// <summary>Counts per bucket (not cumulative).</summary>
    public long[] Snapshot()
    {
        var copy = new long[Buckets];
        for (var i = 0; i < Buckets; i++)
        {
            copy[i] = Interlocked.Read(ref _counts[i]);
        }
        return copy;
    }
}
