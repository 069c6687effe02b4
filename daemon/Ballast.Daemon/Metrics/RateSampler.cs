using System.Collections.Concurrent;
using Ballast.Control;
using Ballast.Daemon.Hosting;
using Microsoft.Extensions.Hosting;

namespace Ballast.Daemon.Metrics;

/// <summary>Samples every volume's counters every few seconds so status can show IOPS and bandwidth.</summary>
public sealed class RateSampler(PoolService pool) : BackgroundService
{
    public static readonly TimeSpan Interval = TimeSpan.FromSeconds(2);

    private readonly ConcurrentDictionary<string, (long Reads, long Writes, long ReadBytes, long WriteBytes, long At)> _last = new();
    private readonly ConcurrentDictionary<string, VolumeRateDto> _rates = new();

    public VolumeRateDto RateOf(string volume) => _rates.TryGetValue(volume, out var r) ? r : new VolumeRateDto(volume, 0, 0, 0, 0);

    public IReadOnlyList<VolumeRateDto> All => [.. _rates.Values.OrderBy(r => r.Volume, StringComparer.Ordinal)];

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(Interval);
        while (await timer.WaitForNextTickAsync(stoppingToken).ConfigureAwait(false))
        {
            Sample();
        }
    }

    public void Sample()
    {
        var now = Environment.TickCount64;
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var info in pool.Pool.ListVolumes())
        {
            if (!pool.Pool.TryOpenVolume(info.Name, out var v))
            {
                continue;
            }
            seen.Add(info.Name);
            var c = v.Counters;
            var cur = (Interlocked.Read(ref c.Reads), Interlocked.Read(ref c.Writes), Interlocked.Read(ref c.ReadBytes), Interlocked.Read(ref c.WriteBytes), now);
            if (_last.TryGetValue(info.Name, out var prev) && now > prev.At)
            {
                var s = (now - prev.At) / 1000.0;
                _rates[info.Name] = new VolumeRateDto(info.Name, (cur.Item1 - prev.Reads) / s, (cur.Item2 - prev.Writes) / s, (cur.Item3 - prev.ReadBytes) / s, (cur.Item4 - prev.WriteBytes) / s);
            }
            _last[info.Name] = cur;
        }
        foreach (var gone in _last.Keys.Where(k => !seen.Contains(k)).ToList())
        {
            _last.TryRemove(gone, out _);
            _rates.TryRemove(gone, out _);
        }
    }
}
