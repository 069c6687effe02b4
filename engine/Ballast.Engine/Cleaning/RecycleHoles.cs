namespace Ballast.Engine.Cleaning;

/// <summary>
/// Dead blocks of sealed segments that client writes may reuse (slack-space recycling): near a
/// full pool, writing into the holes an overwrite left costs one write, where copying live data
/// out of a segment to free it costs u/(1-u) more (3x at 75% live). The cleaner finds the holes
/// (a mark), and hands them over only once the records that killed them are durable and no
/// reader still holds a mapping into them. Runs of adjacent holes are kept in ascending order,
/// so writes move forward through a segment. Used on the appender thread only: the cleaner
/// swaps lists in at a batch boundary.
/// </summary>
internal sealed class RecycleHoles
{
    // How far past the cursor a multi-block record looks for a run long enough.
    private const int SearchRuns = 64;

    private List<(long Phys, int Count)> _runs = [];
    private int _next;
    private long _remaining;
    // Blocks taken since the cleaner's mark began: the mark may have missed those writes, so
    // they are removed from the list it hands over.
    private readonly HashSet<long> _takenSinceMark = [];
    private readonly List<(long Phys, int Count)> _filtered = [];
    private bool _tracking;

    /// <summary>Blocks not yet taken.</summary>
    public long Remaining => _remaining;

    /// <summary>The cleaner starts a mark: from now on, taken blocks are remembered until the next <see cref="Swap"/>.</summary>
    public void BeginMark()
    {
        _takenSinceMark.Clear();
        _tracking = true;
    }

    /// <summary>
    /// Installs a new list of runs (found by the mark since <see cref="BeginMark"/>; ascending
    /// within a segment, not overlapping) without the blocks taken since that mark began, and
    /// returns the old list for reuse.
    /// </summary>
    public List<(long Phys, int Count)> Swap(List<(long Phys, int Count)> runs)
    {
        if (_tracking && _takenSinceMark.Count > 0)
        {
            RemoveTaken(runs);
        }
        _tracking = false;
        _takenSinceMark.Clear();
        var old = _runs;
        _runs = runs;
        _next = 0;
        _remaining = 0;
        foreach (var r in runs)
        {
            _remaining += r.Count;
        }
        return old;
    }

    private void RemoveTaken(List<(long Phys, int Count)> runs)
    {
        _filtered.Clear();
        foreach (var (p, n) in runs)
        {
            var start = p;
            for (var b = p; b < p + n; b++)
            {
                if (_takenSinceMark.Contains(b))
                {
                    if (b > start)
                    {
                        _filtered.Add((start, (int)(b - start)));
                    }
                    start = b + 1;
                }
            }
            if (p + n > start)
            {
                _filtered.Add((start, (int)(p + n - start)));
            }
        }
        runs.Clear();
        runs.AddRange(_filtered);
    }

    /// <summary>Forgets every hole: the cleaner may pick their segments as victims.</summary>
    public void Clear()
    {
        _runs.Clear();
        _next = 0;
        _remaining = 0;
    }

    /// <summary>Takes <paramref name="count"/> adjacent holes; false when no run near the cursor is long enough.</summary>
    public bool TryTake(int count, out long phys)
    {
        phys = -1;
        while (_next < _runs.Count && _runs[_next].Count == 0)
        {
            _next++;
        }
        var end = Math.Min(_runs.Count, _next + SearchRuns);
        for (var i = _next; i < end; i++)
        {
            var (p, n) = _runs[i];
            if (n >= count)
            {
                phys = p;
                _runs[i] = (p + count, n - count);
                _remaining -= count;
                if (_tracking)
                {
                    for (var k = 0; k < count; k++)
                    {
                        _takenSinceMark.Add(p + k);
                    }
                }
                return true;
            }
        }
        return false;
    }
}
