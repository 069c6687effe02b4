namespace Ballast.Nbd.Transmission;

/// <summary>
/// At most <see cref="PerSecond"/> failed-request lines per connection and second; the rest are
/// counted and reported in one line. A pool that fails every write (device error, full) would
/// otherwise log once per request, and the line is written on the thread that completed the
/// request, which may be the engine's appender. Used by the sender only (one thread at a time).
/// </summary>
internal struct FailureLogLimit
{
    public const int PerSecond = 10;

    private long _windowStart;
    private int _logged;
    private int _suppressed;

    /// <summary>True if this failure may be logged; <paramref name="suppressedBefore"/> is how many were not, to report first.</summary>
    public bool Allow(long nowMs, out int suppressedBefore)
    {
        suppressedBefore = 0;
        if (nowMs - _windowStart >= 1000)
        {
            suppressedBefore = _suppressed;
            _suppressed = 0;
            _logged = 0;
            _windowStart = nowMs;
        }
        if (_logged < PerSecond)
        {
            _logged++;
            return true;
        }
        _suppressed++;
        return false;
    }

    /// <summary>Failures not logged since the last report (at the end of the connection).</summary>
    public int TakeSuppressed()
    {
        var n = _suppressed;
        _suppressed = 0;
        return n;
    }
}
