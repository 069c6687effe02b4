using System.Runtime.CompilerServices;

namespace Ballast.Engine.Maps;

/// <summary>
/// A volume's map from 4 KiB block numbers to extents: a copy-on-write radix tree (fan-out 512)
/// whose leaves each cover a window of 1024 blocks with a sorted array of non-overlapping
/// <see cref="MapEntry"/>s. Adjacent entries of the same kind coalesce (data only when physically
/// contiguous within one segment), so sequential writes cost one entry per window.
///
/// A snapshot shares the root and bumps this map's freeze generation: nodes older than it are
/// copied on first change (O(1) snapshot, unlimited count). A clone is a new writable map on a
/// snapshot's root. Writers must hold the owning volume's lock; read-only maps are read lock-free.
/// Memory: 20 bytes per entry in leaf arrays of power-of-two sizes that grow by doubling, about
/// 30 bytes per extent. Arrays that leaves give up go back to <see cref="MapEntryArrays"/>.
/// </summary>
public sealed class ExtentMap
{
    public const int WindowShift = 10;
    public const int WindowBlocks = 1 << WindowShift;
    public const int FanShift = 9;
    public const int Fanout = 1 << FanShift;
    public const int MaxLevels = 6;

    private static long s_gen;
    private readonly MapGeometry _geo;
    private long _gen;
    private long _snapshotFloor;
    private long _checkpointFloor;
    // Leaves copied on write only because a checkpoint was reading them: no snapshot or clone
    // shares them, so their arrays are spare once the checkpoint ends.
    private List<MapLeaf>? _retired;

    public ExtentMap(MapGeometry geometry, long capacityBlocks)
    {
        _geo = geometry;
        _gen = NextGen();
        EnsureCapacity(capacityBlocks);
    }

    private ExtentMap(MapGeometry geometry, MapNode? root, int levels, bool readOnly)
    {
        _geo = geometry;
        Root = root;
        Levels = levels;
        ReadOnly = readOnly;
        _gen = NextGen();
        _snapshotFloor = _gen;
    }

    internal MapNode? Root { get; private set; }
    internal int Levels { get; private set; }
    public bool ReadOnly { get; }
    public MapGeometry Geometry => _geo;
    public long MaxLsn => Root?.MaxLsn ?? 0;

    public static long CapacityOf(int levels) => levels >= MaxLevels ? long.MaxValue : (long)WindowBlocks << (FanShift * levels);

    public long CapacityBlocks => CapacityOf(Levels);

    private static long NextGen() => Interlocked.Increment(ref s_gen);

    private long FrozenBelow => Math.Max(_snapshotFloor, _checkpointFloor);

    private bool Mutable(MapNode n) => ReferenceEquals(n.Owner, this) && n.Gen >= FrozenBelow;

    /// <summary>Adds root levels until the map can address <paramref name="blocks"/> blocks.</summary>
    public void EnsureCapacity(long blocks)
    {
        while (CapacityOf(Levels) < blocks)
        {
            if (Levels >= MaxLevels)
            {
                throw new ArgumentOutOfRangeException(nameof(blocks), "volume too large for the map");
            }
            if (Root != null)
            {
                var inner = NewInner();
                inner.Children[0] = Root;
                inner.MaxLsn = Root.MaxLsn;
                Root = inner;
            }
            Levels++;
        }
    }

    /// <summary>Freezes the current contents as a read-only map (a snapshot) in O(1).</summary>
    public ExtentMap FreezeSnapshot()
    {
        ThrowIfReadOnly();
        var snap = new ExtentMap(_geo, Root, Levels, readOnly: true);
        _snapshotFloor = _gen = NextGen();
        return snap;
    }

    /// <summary>A new writable map that starts with this map's contents (a clone of a snapshot) in O(1).</summary>
    public ExtentMap CreateClone() => new(_geo, Root, Levels, readOnly: false);

    /// <summary>
    /// Starts a checkpoint: returns the root as it is now and makes every existing node
    /// copy-on-write until <see cref="EndCheckpoint"/>, so the checkpoint can serialise it while
    /// writes continue.
    /// </summary>
    internal MapNode? BeginCheckpoint(out int levels)
    {
        levels = Levels;
        if (!ReadOnly)
        {
            _checkpointFloor = _gen = NextGen();
        }
        return Root;
    }

    internal void EndCheckpoint()
    {
        _checkpointFloor = 0;
        if (_retired is not { Count: > 0 })
        {
            return;
        }
        // The checkpoint was the last reader of the leaves copied for it: their arrays are spare.
        foreach (var leaf in _retired)
        {
            MapEntryArrays.Return(leaf.Items);
            leaf.Items = [];
            leaf.Count = 0;
        }
        _retired.Clear();
    }

    /// <summary>Builds a map over nodes loaded from a checkpoint.</summary>
    internal static ExtentMap FromCheckpoint(MapGeometry geometry, MapNode? root, int levels, bool readOnly) =>
        new(geometry, root, levels, readOnly) { _snapshotFloor = 0 };

    /// <summary>Takes ownership of loaded nodes that no other map references, so they change in place.</summary>
    internal void Adopt(Func<MapNode, bool> isShared)
    {
        if (ReadOnly || Root == null)
        {
            return;
        }
        var stack = new Stack<MapNode>();
        stack.Push(Root);
        while (stack.Count > 0)
        {
            var n = stack.Pop();
            if (isShared(n))
            {
                continue;
            }
            n.Owner = this;
            n.Gen = _gen;
            if (n is MapInner inner)
            {
                foreach (var c in inner.Children)
                {
                    if (c != null)
                    {
                        stack.Push(c);
                    }
                }
            }
        }
    }

    /// <summary>
    /// Sets [start, start+count) to one extent. Data entries get consecutive physical blocks from
    /// <paramref name="phys"/>. A Hole on a never-written window records nothing (it is already unmapped).
    /// </summary>
    public void Set(long start, long count, ExtentKind kind, long phys, long lsn, IDisplacedSink? sink = null)
    {
        ThrowIfReadOnly();
        if (count <= 0)
        {
            return;
        }
        if (start < 0 || start + count > CapacityBlocks)
        {
            throw new ArgumentOutOfRangeException(nameof(start), $"range {start}+{count} outside map capacity {CapacityBlocks}");
        }
        var end = start + count;
        var block = start;
        while (block < end)
        {
            var window = block >> WindowShift;
            var within = (int)(block & (WindowBlocks - 1));
            var n = (int)Math.Min(WindowBlocks - within, end - block);
            var createLeaf = kind is ExtentKind.Data or ExtentKind.Zero;
            var leaf = GetLeafForWrite(window, lsn, createLeaf);
            if (leaf != null)
            {
                var target = kind == ExtentKind.Data ? MapEntry.Pack(kind, phys + (block - start)) : MapEntry.Pack(kind, 0);
                LeafSet(leaf, within, n, target, lsn, insert: kind != ExtentKind.Unmapped, sink);
            }
            block += n;
        }
    }

    /// <summary>
    /// Like <see cref="Set"/>, but only over the blocks whose current extent is older than
    /// <paramref name="lsn"/> (unmapped blocks count as oldest). Replica resync uses it so a copy
    /// of data as of some LSN never overwrites a newer write that arrived first.
    /// </summary>
    public void SetIfNewer(long start, long count, ExtentKind kind, long phys, long lsn, IDisplacedSink? sink = null)
    {
        ThrowIfReadOnly();
        if (count <= 0)
        {
            return;
        }
        var end = Math.Min(start + count, CapacityBlocks);
        var runs = new List<(long Block, long Count)>();
        var pos = start;
        Visit(start, end, -1, (in MapPieceInfo p) =>
        {
            if (p.Block > pos)
            {
                runs.Add((pos, p.Block - pos));
            }
            if (p.Lsn < lsn)
            {
                runs.Add((p.Block, p.Count));
            }
            pos = p.Block + p.Count;
        });
        if (pos < end)
        {
            runs.Add((pos, end - pos));
        }
        foreach (var (block, n) in runs)
        {
            Set(block, n, kind, kind == ExtentKind.Data ? phys + (block - start) : 0, lsn, sink);
        }
    }

    /// <summary>Removes every extent at or beyond <paramref name="fromBlock"/> (volume shrink).</summary>
    public void Truncate(long fromBlock, IDisplacedSink? sink = null)
    {
        ThrowIfReadOnly();
        var windows = CapacityBlocks >> WindowShift;
        var window = fromBlock >> WindowShift;
        var within = (int)(fromBlock & (WindowBlocks - 1));
        while (Root != null && (window = NextPopulatedWindow(window)) < windows)
        {
            var leaf = GetLeafForWrite(window, 0, create: false)!;
            LeafSet(leaf, within, WindowBlocks - within, 0, 0, insert: false, sink);
            within = 0;
            window++;
        }
    }

    /// <summary>True if any extent other than a hole lies at or beyond <paramref name="fromBlock"/>.</summary>
    public bool HasContentFrom(long fromBlock)
    {
        var found = false;
        Visit(fromBlock, CapacityBlocks, 0, (in MapPieceInfo p) =>
        {
            if (p.Kind != ExtentKind.Hole)
            {
                found = true;
            }
        });
        return found;
    }

    /// <summary>The first window at or after <paramref name="window"/> that has a leaf (the map's capacity in windows if none).</summary>
    internal long NextPopulatedWindow(long window)
    {
        // Windows are sparse: skip empty subtrees instead of scanning every window.
        var cap = CapacityOf(Levels) >> WindowShift;
        while (window < cap)
        {
            if (FindLeaf(window) != null)
            {
                return window;
            }
            window = SkipEmpty(window);
        }
        return cap;
    }

    private long SkipEmpty(long window)
    {
        var node = Root;
        for (var level = Levels; level >= 1; level--)
        {
            var shift = FanShift * (level - 1);
            var idx = (int)((window >> shift) & (Fanout - 1));
            var child = ((MapInner)node!).Children[idx];
            if (child == null)
            {
                return ((window >> shift) + 1) << shift;
            }
            node = child;
        }
        return window + 1;
    }

    /// <summary>
    /// Resolves [start, start+count) into pieces, merging neighbours of one kind (data only when
    /// physically contiguous). Returns the number of pieces; <paramref name="covered"/> says how
    /// many blocks they cover, which is less than count when <paramref name="pieces"/> filled up.
    /// </summary>
    public int Resolve(long start, int count, Span<MapPiece> pieces, out int covered)
    {
        var n = 0;
        covered = 0;
        var block = start;
        var end = start + count;
        while (block < end)
        {
            var window = block >> WindowShift;
            var within = (int)(block & (WindowBlocks - 1));
            var windowEnd = (int)Math.Min(WindowBlocks, within + (end - block));
            var leaf = window < (CapacityBlocks >> WindowShift) ? FindLeaf(window) : null;
            var pos = within;
            if (leaf == null)
            {
                if (!Emit(pieces, ref n, ExtentKind.Unmapped, 0, windowEnd - pos, 0))
                {
                    return n;
                }
                covered += windowEnd - pos;
                pos = windowEnd;
            }
            else
            {
                var items = leaf.Items;
                var cnt = leaf.Count;
                var idx = FirstEndingAfter(items, cnt, pos);
                while (pos < windowEnd)
                {
                    int len;
                    bool ok;
                    if (idx < cnt && items[idx].Start <= pos)
                    {
                        ref readonly var e = ref items[idx];
                        len = Math.Min(e.End, windowEnd) - pos;
                        ok = Emit(pieces, ref n, e.Kind, e.Kind == ExtentKind.Data ? e.Phys + (pos - e.Start) : 0, len, e.Lsn);
                        idx++;
                    }
                    else
                    {
                        var next = idx < cnt ? Math.Min((int)items[idx].Start, windowEnd) : windowEnd;
                        len = next - pos;
                        ok = Emit(pieces, ref n, ExtentKind.Unmapped, 0, len, 0);
                    }
                    if (!ok)
                    {
                        return n;
                    }
                    covered += len;
                    pos += len;
                }
            }
            block = (window << WindowShift) + pos;
        }
        return n;
    }

    private bool Emit(Span<MapPiece> pieces, ref int n, ExtentKind kind, long phys, int len, long lsn)
    {
        if (n > 0)
        {
            ref var last = ref pieces[n - 1];
            if (last.Kind == kind && (kind != ExtentKind.Data || (last.Phys + last.Count == phys && _geo.SameSegment(last.Phys, phys))))
            {
                last.Count += len;
                last.Lsn = Math.Max(last.Lsn, lsn);
                return true;
            }
        }
        if (n == pieces.Length)
        {
            return false;
        }
        pieces[n++] = new MapPiece { Kind = kind, Phys = phys, Count = len, Lsn = lsn };
        return true;
    }

    /// <summary>A piece reported by <see cref="Visit"/>: absolute block range and what it holds.</summary>
    public readonly record struct MapPieceInfo(long Block, int Count, ExtentKind Kind, long Phys, long Lsn);

    public delegate void PieceVisitor(in MapPieceInfo piece);

    /// <summary>
    /// Visits every stored extent (not unmapped gaps) overlapping [start, end) whose LSN is above
    /// <paramref name="afterLsn"/>, in block order, clipped to the range. Subtrees whose highest LSN
    /// is not above <paramref name="afterLsn"/> are skipped, which makes "changed since" cheap.
    /// </summary>
    public void Visit(long start, long end, long afterLsn, PieceVisitor visitor)
    {
        if (Root != null && start < end)
        {
            VisitNode(Root, Levels, 0, start, Math.Min(end, CapacityBlocks), afterLsn, visitor);
        }
    }

    private static void VisitNode(MapNode node, int level, long baseWindow, long start, long end, long afterLsn, PieceVisitor visitor)
    {
        if (node.MaxLsn <= afterLsn)
        {
            return;
        }
        if (level == 0)
        {
            var leaf = (MapLeaf)node;
            var windowStart = baseWindow << WindowShift;
            for (var i = 0; i < leaf.Count; i++)
            {
                ref readonly var e = ref leaf.Items[i];
                var s = Math.Max(windowStart + e.Start, start);
                var t = Math.Min(windowStart + e.End, end);
                if (s >= t || e.Lsn <= afterLsn)
                {
                    continue;
                }
                var phys = e.Kind == ExtentKind.Data ? e.Phys + (s - windowStart - e.Start) : 0;
                visitor(new MapPieceInfo(s, (int)(t - s), e.Kind, phys, e.Lsn));
            }
            return;
        }
        var inner = (MapInner)node;
        var shift = FanShift * (level - 1);
        var span = (long)WindowBlocks << shift;
        for (var i = 0; i < Fanout; i++)
        {
            var child = inner.Children[i];
            if (child == null)
            {
                continue;
            }
            var childBase = baseWindow + ((long)i << shift);
            var childStart = childBase << WindowShift;
            if (childStart >= end || childStart + span <= start)
            {
                continue;
            }
            VisitNode(child, level - 1, childBase, start, end, afterLsn, visitor);
        }
    }

    /// <summary>Adds the leaves of the windows that overlap blocks [start, end) not yet in <paramref name="seen"/>.</summary>
    internal void CollectLeavesIn(long start, long end, HashSet<MapNode> seen, List<MapLeaf> leaves)
    {
        var last = (Math.Min(end, CapacityBlocks) - 1) >> WindowShift;
        // Empty subtrees are skipped: a range may span a thin volume's unwritten terabytes.
        for (var window = NextPopulatedWindow(Math.Max(0, start) >> WindowShift); window <= last; window = NextPopulatedWindow(window + 1))
        {
            if (FindLeaf(window) is { } leaf && seen.Add(leaf))
            {
                leaves.Add(leaf);
            }
        }
    }

    /// <summary>Every leaf reachable from <paramref name="root"/> not already in <paramref name="seen"/>.</summary>
    internal static void CollectLeaves(MapNode? root, HashSet<MapNode> seen, List<MapLeaf> leaves, Stack<MapNode>? stack = null)
    {
        if (root == null)
        {
            return;
        }
        stack ??= new Stack<MapNode>();
        stack.Push(root);
        while (stack.Count > 0)
        {
            var n = stack.Pop();
            if (!seen.Add(n))
            {
                continue;
            }
            if (n is MapInner inner)
            {
                foreach (var c in inner.Children)
                {
                    if (c != null)
                    {
                        stack.Push(c);
                    }
                }
            }
            else
            {
                leaves.Add((MapLeaf)n);
            }
        }
    }

    /// <summary>Number of stored extents (counting shared leaves once per map).</summary>
    public long CountEntries()
    {
        long total = 0;
        Visit(0, CapacityBlocks, 0, (in MapPieceInfo _) => total++);
        return total;
    }

    private MapLeaf? FindLeaf(long window)
    {
        var node = Root;
        for (var level = Levels; level >= 1 && node != null; level--)
        {
            var idx = (int)((window >> (FanShift * (level - 1))) & (Fanout - 1));
            node = ((MapInner)node).Children[idx];
        }
        return node as MapLeaf;
    }

    private MapLeaf? GetLeafForWrite(long window, long lsn, bool create)
    {
        if (!create && FindLeaf(window) == null)
        {
            return null;
        }
        if (Root == null)
        {
            Root = Levels == 0 ? NewLeaf(4) : NewInner();
        }
        else if (!Mutable(Root))
        {
            Root = Copy(Root);
        }
        var node = Root;
        node.MaxLsn = Math.Max(node.MaxLsn, lsn);
        for (var level = Levels; level >= 1; level--)
        {
            var inner = (MapInner)node;
            var idx = (int)((window >> (FanShift * (level - 1))) & (Fanout - 1));
            var child = inner.Children[idx];
            if (child == null)
            {
                child = level == 1 ? NewLeaf(4) : NewInner();
                inner.Children[idx] = child;
            }
            else if (!Mutable(child))
            {
                child = Copy(child);
                inner.Children[idx] = child;
            }
            child.MaxLsn = Math.Max(child.MaxLsn, lsn);
            node = child;
        }
        return (MapLeaf)node;
    }

    private MapLeaf NewLeaf(int capacity) => new(MapEntryArrays.Rent(capacity)) { Owner = this, Gen = _gen };

    private MapInner NewInner() => new() { Owner = this, Gen = _gen };

    private MapNode Copy(MapNode n)
    {
        if (n is MapLeaf leaf)
        {
            var copy = NewLeaf(Math.Min(WindowBlocks, leaf.Count + 4));
            Array.Copy(leaf.Items, copy.Items, leaf.Count);
            copy.Count = leaf.Count;
            copy.MaxLsn = leaf.MaxLsn;
            if (_checkpointFloor != 0 && ReferenceEquals(leaf.Owner, this) && leaf.Gen >= _snapshotFloor)
            {
                (_retired ??= []).Add(leaf);
            }
            return copy;
        }
        var inner = (MapInner)n;
        var c = NewInner();
        Array.Copy(inner.Children, c.Children, Fanout);
        c.MaxLsn = inner.MaxLsn;
        return c;
    }

    /// <summary>Index of the first entry whose end lies after <paramref name="pos"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int FirstEndingAfter(MapEntry[] items, int count, int pos)
    {
        int lo = 0, hi = count;
        while (lo < hi)
        {
            var mid = (lo + hi) >>> 1;
            if (items[mid].End <= pos)
            {
                lo = mid + 1;
            }
            else
            {
                hi = mid;
            }
        }
        return lo;
    }

    private void LeafSet(MapLeaf leaf, int s, int n, long target, long lsn, bool insert, IDisplacedSink? sink)
    {
        var items = leaf.Items;
        var count = leaf.Count;
        var e = s + n;
        var i = FirstEndingAfter(items, count, s);
        var j = i;
        while (j < count && items[j].Start < e)
        {
            j++;
        }
        MapEntry left = default, right = default;
        bool hasLeft = false, hasRight = false;
        if (i < j)
        {
            var first = items[i];
            if (first.Start < s)
            {
                hasLeft = true;
                left = first;
                left.Count = (ushort)(s - first.Start);
            }
            var last = items[j - 1];
            if (last.End > e)
            {
                hasRight = true;
                right = last;
                right.Start = (ushort)e;
                right.Count = (ushort)(last.End - e);
                if (last.Kind == ExtentKind.Data)
                {
                    right.Target = MapEntry.Pack(ExtentKind.Data, last.Phys + (e - last.Start));
                }
            }
            if (sink != null)
            {
                for (var k = i; k < j; k++)
                {
                    ref readonly var x = ref items[k];
                    if (x.Kind == ExtentKind.Data)
                    {
                        var os = Math.Max(s, (int)x.Start);
                        var oe = Math.Min(e, x.End);
                        sink.Displaced(x.Phys + (os - x.Start), oe - os);
                    }
                }
            }
        }
        var newCount = (hasLeft ? 1 : 0) + (insert ? 1 : 0) + (hasRight ? 1 : 0);
        var total = count - (j - i) + newCount;
        if (total > items.Length)
        {
            var grown = MapEntryArrays.Rent(Math.Max(total, Math.Min(WindowBlocks, items.Length * 2)));
            Array.Copy(items, grown, i);
            Array.Copy(items, j, grown, i + newCount, count - j);
            // Only a mutable leaf grows, and only under the volume's lock: no one else holds the old array.
            MapEntryArrays.Return(items);
            leaf.Items = items = grown;
        }
        else if (j - i != newCount)
        {
            Array.Copy(items, j, items, i + newCount, count - j);
        }
        var w = i;
        if (hasLeft)
        {
            items[w++] = left;
        }
        var ni = w;
        if (insert)
        {
            items[w++] = new MapEntry { Target = target, Lsn = lsn, Start = (ushort)s, Count = (ushort)n };
        }
        if (hasRight)
        {
            items[w] = right;
        }
        leaf.Count = total;
        leaf.MaxLsn = Math.Max(leaf.MaxLsn, lsn);
        if (insert)
        {
            if (ni + 1 < leaf.Count && CanMerge(items[ni], items[ni + 1]))
            {
                Merge(leaf, ni);
            }
            if (ni > 0 && CanMerge(items[ni - 1], items[ni]))
            {
                Merge(leaf, ni - 1);
            }
        }
    }

    private bool CanMerge(in MapEntry a, in MapEntry b)
    {
        if (a.End != b.Start || a.Kind != b.Kind)
        {
            return false;
        }
        return a.Kind != ExtentKind.Data || (a.Phys + a.Count == b.Phys && _geo.SameSegment(a.Phys, b.Phys));
    }

    /// <summary>Merges entry i+1 into entry i.</summary>
    private static void Merge(MapLeaf leaf, int i)
    {
        var items = leaf.Items;
        items[i].Count = (ushort)(items[i].Count + items[i + 1].Count);
        items[i].Lsn = Math.Max(items[i].Lsn, items[i + 1].Lsn);
        Array.Copy(items, i + 2, items, i + 1, leaf.Count - i - 2);
        leaf.Count--;
    }

    private void ThrowIfReadOnly()
    {
        if (ReadOnly)
        {
            throw new InvalidOperationException("the map is read-only (a snapshot)");
        }
    }
}
