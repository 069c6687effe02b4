using Ballast.Engine.Log;
using Ballast.Engine.Maps;
using Ballast.Engine.Volumes;

namespace Ballast.Engine.Cleaning;

/// <summary>
/// Points every map entry that lies in a moved component at the copy (one 64-bit store each).
/// The cleaner runs it live; replay runs it again at the CleanCommit record, so both paths end
/// with the same maps.
/// </summary>
internal static class Redirector
{
    /// <summary>
    /// Returns victims some entry still points into without a copy (none, unless there is a bug).
    /// With <paramref name="blocks"/> only that range of each map is walked: the defragmenter's
    /// copies are of one range of a volume, and a block a map shares with another (snapshot,
    /// clone) lies at the same offset in both, since sharing never moves data to another offset.
    /// (Were one elsewhere, it would keep pointing at the old block, which nothing frees while a
    /// map points at it; replay walks the same range, so both paths agree.)
    /// </summary>
    public static HashSet<int> Apply(IEnumerable<VolumeState> volumes, LiveRanges moved, PoolLayout layout, MapWalkScratch? scratch = null, (long Start, long End)? blocks = null,
        IDisplacedSink? displaced = null)
    {
        var unsafeVictims = new HashSet<int>();
        scratch ??= new MapWalkScratch();
        try
        {
            Redirect(volumes, moved, layout, scratch, unsafeVictims, blocks, displaced);
        }
        finally
        {
            scratch.Clear();
        }
        return unsafeVictims;
    }

    private static void Redirect(IEnumerable<VolumeState> volumes, LiveRanges moved, PoolLayout layout, MapWalkScratch scratch, HashSet<int> unsafeVictims, (long Start, long End)? blocks,
        IDisplacedSink? displaced)
    {
        var seen = scratch.Seen;
        var leaves = scratch.Leaves;
        foreach (var s in moved.Segments)
        {
            scratch.MarkSegment(s, layout.SegmentCount);
        }
        var tracked = scratch.Segments;
        foreach (var v in volumes)
        {
            lock (v.Lock)
            {
                leaves.Clear();
                if (blocks is var (start, end))
                {
                    v.Map.CollectLeavesIn(start, end, seen, leaves);
                }
                else
                {
                    ExtentMap.CollectLeaves(v.Map.Root, seen, leaves, scratch.Stack);
                }
                foreach (var leaf in leaves)
                {
                    for (var i = 0; i < leaf.Count; i++)
                    {
                        // Under the volume's lock, once per entry of the map: kept to a kind test, a
                        // shift and an array load for the entries outside the victims.
                        ref var e = ref leaf.Items[i];
                        if (e.Kind != ExtentKind.Data)
                        {
                            continue;
                        }
                        var seg = layout.SegmentOf(e.Phys);
                        if ((uint)seg >= (uint)tracked.Length || !tracked[seg] || !layout.IsDataBlock(e.Phys))
                        {
                            continue;
                        }
                        var np = moved.RedirectRange(e.Phys, e.Count);
                        if (np >= 0)
                        {
                            // The old blocks are dead unless another entry (not redirected) still
                            // holds them: an estimate for the pool's space figures, as for writes.
                            displaced?.Displaced(e.Phys, e.Count);
                            Volatile.Write(ref e.Target, MapEntry.Pack(ExtentKind.Data, np));
                        }
                        else
                        {
                            unsafeVictims.Add(seg);
                        }
                    }
                }
            }
        }
    }

    /// <summary>A MoveCommit's payload: the block range its copies came from, then the segments.</summary>
    public static byte[] EncodeMoves(long start, long end, IReadOnlyCollection<int> segments)
    {
        var list = EncodeVictims(segments);
        var b = new byte[16 + list.Length];
        System.Buffers.Binary.BinaryPrimitives.WriteInt64LittleEndian(b, start);
        System.Buffers.Binary.BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(8), end);
        list.CopyTo(b, 16);
        return b;
    }

    /// <summary>Reads <see cref="EncodeMoves"/>; false for a payload too short or a range that makes no sense.</summary>
    public static bool DecodeMoves(ReadOnlySpan<byte> inline, int segmentCount, out long start, out long end, out List<int> segments)
    {
        start = end = 0;
        segments = [];
        if (inline.Length < 16)
        {
            return false;
        }
        start = System.Buffers.Binary.BinaryPrimitives.ReadInt64LittleEndian(inline);
        end = System.Buffers.Binary.BinaryPrimitives.ReadInt64LittleEndian(inline[8..]);
        segments = DecodeVictims(inline[16..], segmentCount);
        return start >= 0 && end > start;
    }

    public static byte[] EncodeVictims(IReadOnlyCollection<int> victims)
    {
        var b = new byte[4 * victims.Count];
        var i = 0;
        foreach (var v in victims)
        {
            System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(4 * i++), v);
        }
        return b;
    }

    public static List<int> DecodeVictims(ReadOnlySpan<byte> inline, int segmentCount)
    {
        var list = new List<int>(inline.Length / 4);
        for (var i = 0; i + 4 <= inline.Length; i += 4)
        {
            var v = System.Buffers.Binary.BinaryPrimitives.ReadInt32LittleEndian(inline[i..]);
            if (v >= 0 && v < segmentCount)
            {
                list.Add(v);
            }
        }
        return list;
    }
}
