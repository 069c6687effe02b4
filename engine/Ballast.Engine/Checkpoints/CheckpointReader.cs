using Ballast.Engine.Log;
using Ballast.Engine.Maps;
using Ballast.Engine.Volumes;

namespace Ballast.Engine.Checkpoints;

/// <summary>What a checkpoint restores.</summary>
internal sealed class LoadedCheckpoint
{
    public LogPosition Position { get; init; }
    public ulong LastSeq { get; init; }
    public uint NextVolumeId { get; init; }
    public Dictionary<uint, VolumeState> Volumes { get; } = [];
    public long Nodes { get; set; }
    public long Extents { get; set; }
}

/// <summary>
/// Loads a checkpoint, validating every count, offset and reference before use: a corrupt
/// checkpoint fails the open with a clear message instead of building a wrong map.
/// </summary>
internal static class CheckpointReader
{
    public static LoadedCheckpoint Read(CheckpointSource src, SegmentTable segments, Guid poolId, MapGeometry geometry)
    {
        var layout = segments.Layout;
        if (src.U64() != CheckpointFormat.Magic)
        {
            throw new InvalidDataException("checkpoint magic missing");
        }
        var version = src.U32();
        if (version != CheckpointFormat.Version)
        {
            throw new InvalidDataException($"checkpoint version {version} is not supported");
        }
        Span<byte> guid = stackalloc byte[16];
        src.Bytes(guid);
        if (new Guid(guid) != poolId)
        {
            throw new InvalidDataException("checkpoint belongs to another pool");
        }
        src.U64(); // generation, informational
        var position = new LogPosition(src.I32(), src.U64(), src.I32());
        if (position.Segment < 0 || position.Segment >= layout.SegmentCount || position.Offset < 0 || position.Offset > layout.BatchLimit)
        {
            throw new InvalidDataException($"checkpoint replay position {position} outside the pool");
        }
        var loaded = new LoadedCheckpoint { Position = position, LastSeq = src.U64(), NextVolumeId = src.U32() };

        ReadSegments(src, segments);
        var nodes = ReadNodes(src, segments, geometry, loaded);
        ReadVolumes(src, nodes, geometry, loaded);
        if (src.U64() != CheckpointFormat.EndMagic)
        {
            throw new InvalidDataException("checkpoint end marker missing");
        }
        return loaded;
    }

    private static void ReadSegments(CheckpointSource src, SegmentTable segments)
    {
        var layout = segments.Layout;
        var count = src.Count(layout.SegmentCount, "segment");
        var crcBytes = new byte[layout.BlocksPerSegment * 4];
        for (var i = 0; i < count; i++)
        {
            var state = (SegmentState)src.U8();
            if (state == SegmentState.Free)
            {
                continue;
            }
            if (state != SegmentState.Log)
            {
                throw new InvalidDataException($"checkpoint segment {i} has state {state}");
            }
            var seq = src.U64();
            var offset = src.I32();
            var written = src.I32();
            var sealMark = src.U8();
            if (sealMark > 2)
            {
                throw new InvalidDataException($"checkpoint segment {i} has seal mark {sealMark}");
            }
            var sealed_ = sealMark != 0;
            var recycled = sealMark == 2;
            if (offset < layout.FirstBatchOffset || offset > layout.SegmentSize || offset % PoolLayout.BlockSize != 0 || written < 0 || written > layout.BlocksPerSegment)
            {
                throw new InvalidDataException($"checkpoint segment {i} write offset {offset} out of range");
            }
            segments.MarkUsed(i, SegmentState.Log, seq);
            var e = segments[i];
            e.WriteOffset = offset;
            e.WrittenBlocks = written;
            e.Sealed = sealed_;
            e.Recycled = recycled;
            if (sealed_ && !recycled)
            {
                e.SummaryCrc = src.U32();
                continue;
            }
            var blocks = offset >> PoolLayout.BlockShift;
            src.Bytes(crcBytes.AsSpan(0, blocks * 4));
            for (var b = 0; b < blocks; b++)
            {
                e.Crcs![b] = System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(crcBytes.AsSpan(b * 4));
            }
        }
    }

    private static List<MapNode> ReadNodes(CheckpointSource src, SegmentTable segments, MapGeometry geometry, LoadedCheckpoint loaded)
    {
        var layout = segments.Layout;
        var count = src.Count(int.MaxValue - 1, "node");
        var nodes = new List<MapNode>(Math.Min(count, 1 << 20));
        Span<byte> entry = stackalloc byte[CheckpointFormat.EntryBytes];
        Span<byte> bitmap = stackalloc byte[CheckpointFormat.BitmapBytes];
        for (var id = 0; id < count; id++)
        {
            var type = src.U8();
            var maxLsn = src.I64();
            if (type == CheckpointFormat.LeafNode)
            {
                var n = src.Count(ExtentMap.WindowBlocks, "leaf entry");
                var leaf = new MapLeaf(n) { Count = n, MaxLsn = maxLsn };
                var prevEnd = 0;
                for (var i = 0; i < n; i++)
                {
                    src.Bytes(entry);
                    var e = new MapEntry
                    {
                        Target = System.Buffers.Binary.BinaryPrimitives.ReadInt64LittleEndian(entry),
                        Lsn = System.Buffers.Binary.BinaryPrimitives.ReadInt64LittleEndian(entry[8..]),
                        Start = System.Buffers.Binary.BinaryPrimitives.ReadUInt16LittleEndian(entry[16..]),
                        Count = System.Buffers.Binary.BinaryPrimitives.ReadUInt16LittleEndian(entry[18..]),
                    };
                    if (e.Count == 0 || e.Start < prevEnd || e.End > ExtentMap.WindowBlocks || e.Kind == ExtentKind.Unmapped || e.Lsn > maxLsn)
                    {
                        throw new InvalidDataException($"checkpoint leaf {id} entry {i} is malformed");
                    }
                    if (e.Kind == ExtentKind.Data)
                    {
                        var last = e.Phys + e.Count - 1;
                        if (!layout.IsDataBlock(e.Phys) || !layout.IsDataBlock(last) || !geometry.SameSegment(e.Phys, last)
                            || segments.StateOf(layout.SegmentOf(e.Phys)) != SegmentState.Log)
                        {
                            throw new InvalidDataException($"checkpoint leaf {id} entry {i} points outside the log (block {e.Phys})");
                        }
                    }
                    prevEnd = e.End;
                    leaf.Items[i] = e;
                }
                loaded.Extents += n;
                nodes.Add(leaf);
            }
            else if (type == CheckpointFormat.InnerNode)
            {
                var inner = new MapInner { MaxLsn = maxLsn };
                src.Bytes(bitmap);
                for (var i = 0; i < ExtentMap.Fanout; i++)
                {
                    if ((bitmap[i >> 3] & (1 << (i & 7))) != 0)
                    {
                        var child = src.I32();
                        if (child < 0 || child >= id)
                        {
                            throw new InvalidDataException($"checkpoint node {id} references node {child}");
                        }
                        inner.Children[i] = nodes[child];
                    }
                }
                nodes.Add(inner);
            }
            else
            {
                throw new InvalidDataException($"checkpoint node {id} has unknown type {type}");
            }
        }
        loaded.Nodes = count;
        return nodes;
    }

    private static void ReadVolumes(CheckpointSource src, List<MapNode> nodes, MapGeometry geometry, LoadedCheckpoint loaded)
    {
        var count = src.Count(1 << 24, "volume");
        var roots = new List<(VolumeMeta Meta, long Applied, MapNode? Root, int Levels)>();
        var levelOf = new Dictionary<MapNode, int>(ReferenceEqualityComparer.Instance);
        for (var i = 0; i < count; i++)
        {
            var len = src.Count(64 * 1024, "volume metadata byte");
            var buf = new byte[len];
            src.Bytes(buf);
            var meta = VolumeMeta.Decode(buf, out _);
            var applied = src.I64();
            var rootId = src.I32();
            var levels = src.I32();
            if (rootId < -1 || rootId >= nodes.Count || levels < 0 || levels > ExtentMap.MaxLevels
                || ExtentMap.CapacityOf(levels) < (meta.Size + Log.PoolLayout.BlockSize - 1) / Log.PoolLayout.BlockSize)
            {
                throw new InvalidDataException($"checkpoint volume {meta.Name}: root {rootId} / levels {levels} out of range");
            }
            var root = rootId < 0 ? null : nodes[rootId];
            if (root != null)
            {
                CheckShape(root, levels, levelOf);
            }
            if (loaded.Volumes.ContainsKey(meta.Id) || meta.Id >= loaded.NextVolumeId)
            {
                throw new InvalidDataException($"checkpoint volume id {meta.Id} duplicated or beyond the id counter");
            }
            roots.Add((meta, applied, root, levels));
            loaded.Volumes[meta.Id] = null!;
        }
        var shared = FindShared(roots.Select(r => r.Root));
        foreach (var (meta, applied, root, levels) in roots)
        {
            var map = ExtentMap.FromCheckpoint(geometry, root, levels, readOnly: meta.Kind == VolumeKind.Snapshot);
            map.Adopt(shared.Contains);
            var state = new VolumeState(meta, map)
            {
                AppliedLsn = applied,
                NextLsn = applied,
                CheckpointLsn = applied,
            };
            loaded.Volumes[meta.Id] = state;
        }
        foreach (var v in loaded.Volumes.Values)
        {
            if (v.IsSnapshot && loaded.Volumes.TryGetValue(v.Meta.ParentId, out var parent))
            {
                parent.Snapshots.Add(v.Id);
            }
        }
    }

    /// <summary>Inner nodes at levels >= 1 and leaves at level 0, consistently for shared nodes.</summary>
    private static void CheckShape(MapNode root, int levels, Dictionary<MapNode, int> levelOf)
    {
        var stack = new Stack<(MapNode, int)>();
        stack.Push((root, levels));
        while (stack.Count > 0)
        {
            var (n, level) = stack.Pop();
            if (levelOf.TryGetValue(n, out var known))
            {
                if (known != level)
                {
                    throw new InvalidDataException("checkpoint map node appears at two different depths");
                }
                continue;
            }
            levelOf[n] = level;
            if ((level == 0) != (n is MapLeaf))
            {
                throw new InvalidDataException("checkpoint map has a leaf and an inner node at the wrong depth");
            }
            if (n is MapInner inner)
            {
                foreach (var c in inner.Children)
                {
                    if (c != null)
                    {
                        stack.Push((c, level - 1));
                    }
                }
            }
        }
    }

    /// <summary>Nodes reachable from more than one root: they stay copy-on-write for every map.</summary>
    internal static HashSet<MapNode> FindShared(IEnumerable<MapNode?> roots)
    {
        var owner = new Dictionary<MapNode, int>(ReferenceEqualityComparer.Instance);
        var shared = new HashSet<MapNode>(ReferenceEqualityComparer.Instance);
        var stack = new Stack<MapNode>();
        var index = 0;
        foreach (var root in roots)
        {
            var me = index++;
            if (root == null)
            {
                continue;
            }
            stack.Push(root);
            while (stack.Count > 0)
            {
                var n = stack.Pop();
                if (shared.Contains(n))
                {
                    continue;
                }
                if (owner.TryGetValue(n, out var o))
                {
                    if (o != me)
                    {
                        MarkShared(n, shared);
                    }
                    continue;
                }
                owner[n] = me;
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
        return shared;
    }

    private static void MarkShared(MapNode n, HashSet<MapNode> shared)
    {
        var stack = new Stack<MapNode>();
        stack.Push(n);
        while (stack.Count > 0)
        {
            var x = stack.Pop();
            if (!shared.Add(x))
            {
                continue;
            }
            if (x is MapInner inner)
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
}
