using System.Buffers.Binary;
using Ballast.Engine.Log;
using Ballast.Engine.Maps;

namespace Ballast.Engine.Checkpoints;

/// <summary>
/// Serialises a <see cref="CheckpointCapture"/>: segment table with per-block CRCs, every map
/// node once (snapshots and clones share nodes, so sharing is kept), then the volumes.
/// </summary>
internal static class CheckpointWriter
{
    public static void Write(CheckpointSink sink, CheckpointCapture c, SegmentTable segments, Guid poolId, ulong generation)
    {
        sink.U64(CheckpointFormat.Magic);
        sink.U32(CheckpointFormat.Version);
        Span<byte> guid = stackalloc byte[16];
        poolId.TryWriteBytes(guid);
        sink.Bytes(guid);
        sink.U64(generation);
        sink.I32(c.Position.Segment);
        sink.U64(c.Position.Seq);
        sink.I32(c.Position.Offset);
        sink.U64(c.LastSeq);
        sink.U32(c.NextVolumeId);

        WriteSegments(sink, c, segments);
        var ids = WriteNodes(sink, c);
        sink.I32(c.Volumes.Count);
        foreach (var v in c.Volumes)
        {
            var meta = v.Meta.Encode();
            sink.U32((uint)meta.Length);
            sink.Bytes(meta);
            sink.I64(v.AppliedLsn);
            sink.I32(v.Root == null ? -1 : ids[v.Root]);
            sink.I32(v.Levels);
        }
        sink.U64(CheckpointFormat.EndMagic);
    }

    private static void WriteSegments(CheckpointSink sink, CheckpointCapture c, SegmentTable segments)
    {
        sink.I32(c.States.Length);
        var crcBytes = new byte[segments.Layout.BlocksPerSegment * 4];
        for (var i = 0; i < c.States.Length; i++)
        {
            sink.U8((byte)c.States[i]);
            if (c.States[i] != SegmentState.Log)
            {
                continue;
            }
            sink.U64(c.Seqs[i]);
            sink.I32(c.WriteOffsets[i]);
            sink.I32(c.WrittenBlocks[i]);
            // 0: open, CRCs follow; 1: sealed, CRCs in its summary; 2: sealed and recycled, CRCs
            // follow (its summary no longer matches).
            sink.U8(!c.Sealed[i] ? (byte)0 : c.Recycled[i] ? (byte)2 : (byte)1);
            if (c.Sealed[i] && !c.Recycled[i])
            {
                // Its CRCs are in the segment summary, not in the checkpoint.
                sink.U32(c.SummaryCrcs[i]);
                continue;
            }
            var blocks = c.WriteOffsets[i] >> PoolLayout.BlockShift;
            var crcs = segments[i].Crcs;
            for (var b = 0; b < blocks; b++)
            {
                BinaryPrimitives.WriteUInt32LittleEndian(crcBytes.AsSpan(b * 4), crcs == null ? 0 : crcs[b]);
            }
            sink.Bytes(crcBytes.AsSpan(0, blocks * 4));
        }
    }

    private static Dictionary<MapNode, int> WriteNodes(CheckpointSink sink, CheckpointCapture c)
    {
        // Post-order: children get ids before their parents, so the loader links backwards only.
        var ids = new Dictionary<MapNode, int>(ReferenceEqualityComparer.Instance);
        var order = new List<MapNode>();
        var stack = new Stack<(MapNode Node, bool Expanded)>();
        foreach (var v in c.Volumes)
        {
            if (v.Root == null || ids.ContainsKey(v.Root))
            {
                continue;
            }
            stack.Push((v.Root, false));
            while (stack.Count > 0)
            {
                var (node, expanded) = stack.Pop();
                if (ids.ContainsKey(node))
                {
                    continue;
                }
                if (expanded || node is MapLeaf)
                {
                    ids[node] = order.Count;
                    order.Add(node);
                    continue;
                }
                stack.Push((node, true));
                foreach (var child in ((MapInner)node).Children)
                {
                    if (child != null && !ids.ContainsKey(child))
                    {
                        stack.Push((child, false));
                    }
                }
            }
        }
        sink.I32(order.Count);
        Span<byte> entry = stackalloc byte[CheckpointFormat.EntryBytes];
        Span<byte> bitmap = stackalloc byte[CheckpointFormat.BitmapBytes];
        foreach (var node in order)
        {
            if (node is MapLeaf leaf)
            {
                sink.U8(CheckpointFormat.LeafNode);
                sink.I64(leaf.MaxLsn);
                sink.I32(leaf.Count);
                for (var i = 0; i < leaf.Count; i++)
                {
                    ref readonly var e = ref leaf.Items[i];
                    BinaryPrimitives.WriteInt64LittleEndian(entry, e.Target);
                    BinaryPrimitives.WriteInt64LittleEndian(entry[8..], e.Lsn);
                    BinaryPrimitives.WriteUInt16LittleEndian(entry[16..], e.Start);
                    BinaryPrimitives.WriteUInt16LittleEndian(entry[18..], e.Count);
                    sink.Bytes(entry);
                }
            }
            else
            {
                var inner = (MapInner)node;
                sink.U8(CheckpointFormat.InnerNode);
                sink.I64(inner.MaxLsn);
                bitmap.Clear();
                for (var i = 0; i < ExtentMap.Fanout; i++)
                {
                    if (inner.Children[i] != null)
                    {
                        bitmap[i >> 3] |= (byte)(1 << (i & 7));
                    }
                }
                sink.Bytes(bitmap);
                for (var i = 0; i < ExtentMap.Fanout; i++)
                {
                    if (inner.Children[i] is { } child)
                    {
                        sink.I32(ids[child]);
                    }
                }
            }
        }
        return ids;
    }
}
