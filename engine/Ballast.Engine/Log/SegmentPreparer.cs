using System.Diagnostics;
using Ballast.Engine.Storage;

namespace Ballast.Engine.Log;

/// <summary>
/// Keeps a window of free segments written with zeroes ahead of the log. On ext4 and xfs a write
/// into space that was never written (a sparse file's hole, or a fallocated extent) converts the
/// extent, and the next fdatasync must then commit the filesystem journal: on the bench machine
/// a sync after such writes took 187 µs against 81 µs in written space. Each segment is zeroed
/// at most once in the pool's life (freed segments keep their space), only ahead of use, so a
/// new pool file stays thin. Zeroing a free segment is safe: nothing needs its contents (a
/// segment becomes free only once no checkpoint or replay needs it), and it is claimed, so
/// nothing is allocated in it meanwhile.
/// Zeroing costs device bandwidth and saves time per sync: it pays while the log syncs often
/// for the bytes it writes (4 KiB writes with a flush every 32: 8 syncs per MiB; a database's
/// commits: hundreds) and not for a stream of large writes (1 MiB writes, a flush every 32:
/// 1 sync per 32 MiB lost 9-18% of its throughput to zeroing). So it runs while the log is
/// quiet or syncs at least <see cref="SyncsPerMiBWorthIt"/> times per MiB, and waits otherwise.
/// </summary>
internal sealed class SegmentPreparer
{
    private readonly IPoolStorage _storage;
    private readonly PoolLayout _layout;
    private readonly SegmentTable _segments;
    private readonly int _window;
    private readonly long _bytesPerSecond;
    private readonly Func<int> _keepFree;
    private readonly Func<(long Bytes, long Syncs)> _logActivity;
    private readonly Action _spaceBack;
    private readonly Action<PoolLogLevel, string> _report;
    // At most one wake-up pending: allocations while it zeroes or waits must not pile up into
    // as many empty passes over the segment table.
    private readonly SemaphoreSlim _wake = new(0, 1);
    private long _zeroedBytes;
    private bool _stopped;

    private static readonly TimeSpan SampleEvery = TimeSpan.FromMilliseconds(50);

    /// <summary>Log writes below this rate leave the device idle enough to zero at no cost.</summary>
    internal const long QuietLogBytesPerSecond = 32L << 20;

    /// <summary>At this many syncs per MiB of log, the saving per sync outweighs writing each byte twice.</summary>
    internal const double SyncsPerMiBWorthIt = 4;

    public SegmentPreparer(IPoolStorage storage, PoolLayout layout, SegmentTable segments, long aheadBytes, long bytesPerSecond,
        Func<int> keepFree, Func<(long Bytes, long Syncs)> logActivity, Action spaceBack, Action<PoolLogLevel, string> report)
    {
        _logActivity = logActivity;
        _spaceBack = spaceBack;
        _storage = storage;
        _layout = layout;
        _segments = segments;
        _window = (int)Math.Clamp(aheadBytes / layout.SegmentSize, 1, layout.SegmentCount);
        // 0 or less: no limit.
        _bytesPerSecond = bytesPerSecond > 0 ? bytesPerSecond : long.MaxValue;
        _keepFree = keepFree;
        _report = report;
    }

    /// <summary>Bytes of zeroes written (or offloaded to the device) so far.</summary>
    public long ZeroedBytes => Interlocked.Read(ref _zeroedBytes);

    /// <summary>A segment was taken from the free list: the window may need topping up.</summary>
    public void Wake()
    {
        try
        {
            if (_wake.CurrentCount == 0)
            {
                _wake.Release();
            }
        }
        catch (SemaphoreFullException)
        {
            // Another allocation woke it first.
        }
    }

    /// <summary>
    /// Prepares one segment if the window is not full; returns the bytes zeroed, or -1 when there
    /// was nothing to do. A storage error (a full filesystem) stops preparation for good: the
    /// log then writes into unprepared space as it would without a preparer.
    /// </summary>
    public long PrepareOne()
    {
        if (Volatile.Read(ref _stopped))
        {
            return -1;
        }
        var seg = _segments.ClaimForPreparing(_window, _keepFree());
        if (seg < 0)
        {
            return -1;
        }
        var ok = false;
        try
        {
            var zeroed = _storage.ZeroUnwritten(_layout.SegmentOffset(seg), _layout.SegmentSize);
            Interlocked.Add(ref _zeroedBytes, zeroed);
            ok = true;
            return zeroed;
        }
        catch (StorageException e)
        {
            Volatile.Write(ref _stopped, true);
            _report(PoolLogLevel.Warning, $"stopped preparing free segments ahead of the log (segment {seg}): {e.Message}; writes into unprepared space make syncs slower on ext4/xfs");
            return -1;
        }
        finally
        {
            _segments.EndPreparing(seg, ok);
            // The claim hid a free segment: writes that parked for space meanwhile may go on.
            _spaceBack();
        }
    }

    /// <summary>Whether zeroing pays for the log's activity between two samples (see the class comment).</summary>
    internal static bool WorthIt(long logBytes, long syncs, TimeSpan over)
    {
        if (logBytes <= over.TotalSeconds * QuietLogBytesPerSecond)
        {
            return true;
        }
        return syncs >= SyncsPerMiBWorthIt * logBytes / (1 << 20);
    }

    /// <summary>Tops the window up whenever a segment is taken, at most <c>bytesPerSecond</c>, while it pays.</summary>
    public async Task RunAsync(CancellationToken ct)
    {
        var clock = Stopwatch.StartNew();
        long budgetUsed = 0;
        var sampleClock = Stopwatch.StartNew();
        var sample = _logActivity();
        var worthIt = true;
        while (!ct.IsCancellationRequested)
        {
            // Short samples: a stream that starts while the preparer zeroes should find it gone
            // within a segment or two (at 250 ms it lost up to 128 MiB of bandwidth to zeroes).
            if (sampleClock.Elapsed >= SampleEvery)
            {
                var now = _logActivity();
                worthIt = WorthIt(now.Bytes - sample.Bytes, now.Syncs - sample.Syncs, sampleClock.Elapsed);
                sample = now;
                sampleClock.Restart();
            }
            if (!worthIt)
            {
                await Task.Delay(TimeSpan.FromMilliseconds(200), ct).ConfigureAwait(false);
                clock.Restart();
                budgetUsed = 0;
                continue;
            }
            var zeroed = await Task.Run(PrepareOne, ct).ConfigureAwait(false);
            if (zeroed < 0)
            {
                await _wake.WaitAsync(TimeSpan.FromSeconds(5), ct).ConfigureAwait(false);
                clock.Restart();
                budgetUsed = 0;
                // Judge the log on what it does from now on, not averaged with the quiet wait.
                sample = _logActivity();
                sampleClock.Restart();
                worthIt = false;
                continue;
            }
            budgetUsed += zeroed;
            var due = TimeSpan.FromSeconds((double)budgetUsed / _bytesPerSecond) - clock.Elapsed;
            if (due > TimeSpan.Zero)
            {
                await Task.Delay(due, ct).ConfigureAwait(false);
            }
        }
    }
}
