using System.Buffers.Binary;
using Ballast.Engine.Buffers;
using Ballast.Engine.Storage;

namespace Ballast.Engine.Log;

/// <summary>
/// The segment summary: the CRC of every block of a segment, written right after its seal.
/// Checkpoints then carry CRCs only for the segment still open, and loading a pool reads one
/// summary per sealed segment. If a summary is damaged, the CRCs are rebuilt from the batch
/// headers, which hold them too.
/// </summary>
internal static class SegmentSummary
{
    public static void Encode(ReadOnlySpan<uint> crcs, Span<byte> summary)
    {
        summary.Clear();
        for (var i = 0; i < crcs.Length; i++)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(summary[(4 * i)..], crcs[i]);
        }
    }

    /// <summary>Loads the summary of a sealed segment into its CRC table. False if it fails its checksum.</summary>
    public static bool TryLoad(IPoolStorage storage, PoolLayout layout, int segment, SegmentTable.Entry e)
    {
        var bytes = layout.SummaryBlocks << PoolLayout.BlockShift;
        if (e.WriteOffset < bytes + layout.FirstBatchOffset || e.WriteOffset > layout.SegmentSize)
        {
            return false;
        }
        using var buf = new AlignedBuffer(bytes);
        storage.Read(layout.SegmentOffset(segment) + e.WriteOffset - bytes, buf.Span);
        if (Crc32C.Compute(buf.Span) != e.SummaryCrc)
        {
            return false;
        }
        var crcs = e.Crcs!;
        for (var i = 0; i < crcs.Length; i++)
        {
            crcs[i] = BinaryPrimitives.ReadUInt32LittleEndian(buf.Span[(4 * i)..]);
        }
        return true;
    }

    /// <summary>Rebuilds a segment's CRC table from the descriptors of its batches (slow path).</summary>
    public static int Rebuild(IPoolStorage storage, PoolLayout layout, int segment, SegmentTable.Entry e)
    {
        using var buf = new AlignedBuffer(Math.Min(BatchFormat.MaxHeaderBytes, layout.SegmentSize));
        var records = new List<DecodedRecord>();
        var offset = layout.FirstBatchOffset;
        var blocks = 0;
        while (offset <= layout.SegmentSize - PoolLayout.BlockSize)
        {
            var first = buf.Span[..PoolLayout.BlockSize];
            storage.Read(layout.SegmentOffset(segment) + offset, first);
            if (!BatchFormat.TryReadPrefix(first, e.Seq, offset, layout.SegmentSize, out var headerBytes, out var payloadBlocks, out _))
            {
                break;
            }
            storage.Read(layout.SegmentOffset(segment) + offset, buf.Span[..headerBytes]);
            if (!BatchFormat.TryDecodeRecords(buf.Span[..headerBytes], payloadBlocks, records, out _))
            {
                break;
            }
            var payloadBase = layout.BlockInSegment(layout.BlockAddress(segment, offset + headerBytes));
            var sealed_ = false;
            foreach (var r in records)
            {
                if (r.Descriptor.Kind == RecordKind.Seal)
                {
                    sealed_ = true;
                }
                if ((r.Descriptor.Flags & RecordFlags.InPlace) != 0)
                {
                    // Its blocks lie in another segment.
                    continue;
                }
                for (var b = 0; b < r.CrcCount; b++)
                {
                    e.Crcs![payloadBase + r.Descriptor.PayloadBlock + b] = BinaryPrimitives.ReadUInt32LittleEndian(buf.Span[(r.CrcOffset + 4 * b)..]);
                    blocks++;
                }
            }
            if (sealed_)
            {
                break;
            }
            offset += headerBytes + (payloadBlocks << PoolLayout.BlockShift);
        }
        return blocks;
    }

    /// <summary>The seal's inline payload: the summary CRC.</summary>
    public static byte[] SealInline(uint summaryCrc)
    {
        var b = new byte[8];
        BinaryPrimitives.WriteUInt32LittleEndian(b, summaryCrc);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(4), 1);
        return b;
    }

    public static bool TryReadSealInline(ReadOnlySpan<byte> inline, out uint summaryCrc)
    {
        summaryCrc = 0;
        if (inline.Length < 8 || BinaryPrimitives.ReadUInt32LittleEndian(inline[4..]) != 1)
        {
            return false;
        }
        summaryCrc = BinaryPrimitives.ReadUInt32LittleEndian(inline);
        return true;
    }
}
