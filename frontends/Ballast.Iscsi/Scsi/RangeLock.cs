namespace Ballast.Iscsi.Scsi;

/// <summary>
/// A per-LUN lock on LBA ranges that makes COMPARE AND WRITE atomic against every other writer
/// (SBC-3 §5.2): plain writes hold their range shared, COMPARE AND WRITE holds it exclusive.
/// Uncontended acquisition is a monitor enter, a slot store and a monitor exit, with no allocation;
/// only a request that must wait allocates its waiter. A waiting request also blocks later
/// overlapping ones, so a COMPARE AND WRITE is not starved by a stream of writes.
/// </summary>
internal sealed class RangeLock
{
    private readonly object _gate = new();
    private Entry[] _held = new Entry[16];
    private int _count;
    private readonly List<Waiter> _waiters = [];

    private struct Entry
    {
        public long Start;
        public long End;
        public bool Exclusive;
        public bool Used;
    }

    private sealed class Waiter(long start, long end, bool exclusive)
    {
        public readonly long Start = start;
        public readonly long End = end;
        public readonly bool Exclusive = exclusive;
        public readonly TaskCompletionSource<int> Done = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    /// <summary>Takes [start, start+length); the result is the token to pass to <see cref="Release"/>.</summary>
    public ValueTask<int> AcquireAsync(long start, long length, bool exclusive)
    {
        var end = start + Math.Max(length, 1);
        lock (_gate)
        {
            if (!ConflictsLocked(start, end, exclusive, includeWaiters: true))
            {
                return new ValueTask<int>(AddLocked(start, end, exclusive));
            }
            var w = new Waiter(start, end, exclusive);
            _waiters.Add(w);
            return new ValueTask<int>(w.Done.Task);
        }
    }

    public void Release(int token)
    {
        List<(Waiter, int)>? wake = null;
        lock (_gate)
        {
            _held[token].Used = false;
            _count--;
            for (var i = 0; i < _waiters.Count; i++)
            {
                var w = _waiters[i];
                if (ConflictsLocked(w.Start, w.End, w.Exclusive, includeWaiters: false) || ConflictsWithEarlierWaiter(i))
                {
                    continue;
                }
                _waiters.RemoveAt(i--);
                (wake ??= []).Add((w, AddLocked(w.Start, w.End, w.Exclusive)));
            }
        }
        if (wake != null)
        {
            foreach (var (w, t) in wake)
            {
                w.Done.SetResult(t);
            }
        }
    }

    private bool ConflictsWithEarlierWaiter(int index)
    {
        var w = _waiters[index];
        for (var j = 0; j < index; j++)
        {
            var o = _waiters[j];
            if (o.Start < w.End && w.Start < o.End && (o.Exclusive || w.Exclusive))
            {
                return true;
            }
        }
        return false;
    }

    private bool ConflictsLocked(long start, long end, bool exclusive, bool includeWaiters)
    {
        if (_count > 0)
        {
            for (var i = 0; i < _held.Length; i++)
            {
                ref var e = ref _held[i];
                if (e.Used && e.Start < end && start < e.End && (e.Exclusive || exclusive))
                {
                    return true;
                }
            }
        }
        if (includeWaiters)
        {
            foreach (var w in _waiters)
            {
                if (w.Start < end && start < w.End && (w.Exclusive || exclusive))
                {
                    return true;
                }
            }
        }
        return false;
    }

    private int AddLocked(long start, long end, bool exclusive)
    {
        for (var i = 0; i < _held.Length; i++)
        {
            if (!_held[i].Used)
            {
                _held[i] = new Entry { Start = start, End = end, Exclusive = exclusive, Used = true };
                _count++;
                return i;
            }
        }
        var slot = _held.Length;
        Array.Resize(ref _held, _held.Length * 2);
        _held[slot] = new Entry { Start = start, End = end, Exclusive = exclusive, Used = true };
        _count++;
        return slot;
    }
}
