using System.Runtime.InteropServices;

namespace Ballast.Engine.Maps;

/// <summary>
/// One extent in a leaf: 20 bytes. <c>Target</c> packs the kind (top two bits) with the physical
/// block (Data). The cleaner rewrites <c>Target</c> with a single 64-bit store, so lock-free
/// readers of snapshots see either the old or the new location, both holding the same bytes.
/// </summary>
[StructLayout(LayoutKind.Sequential, Pack = 4)]
internal struct MapEntry
{
    public long Target;
    public long Lsn;
    public ushort Start;
    public ushort Count;

    public readonly ExtentKind Kind => (ExtentKind)((ulong)Target >> 62);
    public readonly long Phys => Target & PhysMask;
    public readonly int End => Start + Count;

    public const long PhysMask = (1L << 62) - 1;

    public static long Pack(ExtentKind kind, long phys) => ((long)kind << 62) | (phys & PhysMask);
}

/// <summary>
/// Nodes of the copy-on-write radix tree. A node may be changed in place only by the map that
/// owns it and only if it was created at or after that map's freeze generation; any other map
/// copies it first. That is how snapshots and clones share structure at O(1) cost.
/// </summary>
internal abstract class MapNode
{
    public long MaxLsn;
    public object? Owner;
    public long Gen;
}

internal sealed class MapLeaf : MapNode
{
    public MapEntry[] Items;
    public int Count;

    public MapLeaf(int capacity) => Items = capacity == 0 ? [] : new MapEntry[capacity];

    public MapLeaf(MapEntry[] items) => Items = items;
}

internal sealed class MapInner : MapNode
{
    public readonly MapNode?[] Children = new MapNode?[ExtentMap.Fanout];
}
