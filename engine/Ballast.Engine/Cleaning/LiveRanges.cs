using Ballast.Engine.Log;
using Ballast.Engine.Maps;

namespace Ballast.Engine.Cleaning;

/// <summary>
/// The cleaner's mark result: for each candidate segment, the physical ranges some map still
/// references, merged into components. Two maps reference overlapping ranges only when they
/// share history (snapshot, clone), and then the union is moved as one piece so every
/// referencing entry can be redirected by the same offset.
/// </summary>
internal sealed class LiveRanges
{
    private readonly PoolLayout _layout;
    private readonly Dictionary<int, List<Component>> _bySegment = [];
    // The cleaner marks again and again, each time over every live extent of the pool: lists
    // and tallies are kept from one mark to the next (see Reset), or each pass would leave
    // megabytes of component arrays to the collector.
    private readonly Stack<List<Component>> _spareLists = new();
    private readonly Dictionary<int, int> _liveBlocks = [];

    public LiveRanges(PoolLayout layout) => _layout = layout;

    public struct Component
    {
        public long Phys;
        public int Count;
        public long NewPhys;
    }

    public void Add(long phys, int count)
    {
        var seg = _layout.SegmentOf(phys);
        if (!_bySegment.TryGetValue(seg, out var list))
        {
            return;
        }
        list.Add(new Component { Phys = phys, Count = count, NewPhys = -1 });
    }

    /// <summary>Adjacent live ranges are merged into one copy up to this many blocks (1 MiB).</summary>
    public const int MaxAdjacentMerge = 256;

    public void Track(int segment) => _bySegment[segment] = _spareLists.TryPop(out var list) ? list : [];

    /// <summary>Forgets every segment and component, keeping the lists for the next mark. Not for subsets, which share their lists.</summary>
    public void Reset()
    {
        foreach (var list in _bySegment.Values)
        {
            list.Clear();
            _spareLists.Push(list);
        }
        _bySegment.Clear();
        _liveBlocks.Clear();
    }

    /// <summary>Records a component already copied (replay of a relocation record).</summary>
    public void AddMoved(long phys, int count, long newPhys)
    {
        if (_layout.IsDataBlock(phys) && _bySegment.TryGetValue(_layout.SegmentOf(phys), out var list))
        {
            list.Add(new Component { Phys = phys, Count = count, NewPhys = newPhys });
        }
    }

    public IEnumerable<int> Segments => _bySegment.Keys;

    /// <summary>Sorts replayed components by old location (they are disjoint already).</summary>
    public void SortMoved()
    {
        foreach (var list in _bySegment.Values)
        {
            list.Sort(ByPhys);
        }
    }

    private static readonly Comparison<Component> ByPhys = (a, b) => a.Phys.CompareTo(b.Phys);

    /// <summary>Sorts and merges each segment's ranges in place; returns live blocks per segment (valid until the next Reset).</summary>
    public Dictionary<int, int> Merge()
    {
        _liveBlocks.Clear();
        foreach (var (seg, list) in _bySegment)
        {
            list.Sort(ByPhys);
            var span = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(list);
            var n = 0;
            long total = 0;
            foreach (var c in span)
            {
                // Overlapping ranges (shared by snapshots and clones) must move as one piece;
                // merely adjacent ones are merged only up to a small size, so copies stay small
                // enough to fill the ends of segments.
                if (n > 0)
                {
                    ref var last = ref span[n - 1];
                    var lastEnd = last.Phys + last.Count;
                    if (c.Phys < lastEnd || (c.Phys == lastEnd && last.Count + c.Count <= MaxAdjacentMerge))
                    {
                        var end = Math.Max(lastEnd, c.Phys + c.Count);
                        total += end - lastEnd;
                        last.Count = (int)(end - last.Phys);
                        continue;
                    }
                }
                // n never passes the read position, so the write cannot overwrite an unread entry.
                span[n++] = c;
                total += c.Count;
            }
            list.RemoveRange(n, list.Count - n);
            _liveBlocks[seg] = (int)total;
        }
        return _liveBlocks;
    }

    public List<Component> ComponentsOf(int segment) => _bySegment[segment];

    /// <summary>The components of some tracked segments (sharing their lists).</summary>
    public LiveRanges Subset(IEnumerable<int> segments)
    {
        var sub = new LiveRanges(_layout);
        foreach (var s in segments)
        {
            sub._bySegment[s] = _bySegment[s];
        }
        return sub;
    }

    /// <summary>
    /// New location of [phys, phys+count) when the whole range lies in one moved component, or
    /// -1. Both ends landing in copies one offset apart is not enough: two components copied back
    /// to back (the defragmenter copies in volume order) would take a range across the block
    /// between them, whose copy is of something else.
    /// </summary>
    public long RedirectRange(long phys, int count)
    {
        if (!_layout.IsDataBlock(phys) || !_bySegment.TryGetValue(_layout.SegmentOf(phys), out var list))
        {
            return -1;
        }
        int lo = 0, hi = list.Count - 1;
        while (lo <= hi)
        {
            var mid = (lo + hi) >>> 1;
            var c = list[mid];
            if (phys < c.Phys)
            {
                hi = mid - 1;
            }
            else if (phys >= c.Phys + c.Count)
            {
                lo = mid + 1;
            }
            else
            {
                return c.NewPhys < 0 || phys + count > c.Phys + c.Count ? -1 : c.NewPhys + (phys - c.Phys);
            }
        }
        return -1;
    }
}
/// <summary>What the cleaner has done since the pool opened.</summary>
public sealed class CleanerStats
{
    public long Passes;
    public long SegmentsFreed;
    public long BlocksMoved;

    /// <summary>Device reads the copies took (nearby live components are read together).</summary>
    public long Reads;
    public long CorruptBlocksCarried;
    public double LastPassMs;

    /// <summary>Time spent marking (maps frozen, no lock held) and redirecting (each volume's lock held for its map).</summary>
    public double MarkMs;
    public double RedirectMs;
    public double MaxRedirectMs;

    /// <summary>Dead blocks handed to the appender for client writes to reuse (slack-space recycling).</summary>
    public long HolesHandedOver;
}
