using System.Buffers.Binary;

namespace Ballast.Engine.Log;

/// <summary>
/// A batch is what one group-commit write puts on disk: a header region (multiple of 4 KiB)
/// holding a 64-byte batch header and the record descriptors, then the payload blocks of all data
/// records. Payload stays 4 KiB-aligned, so reads of data are O_DIRECT reads of whole blocks.
/// </summary>
public static class BatchFormat
{
    public const uint Magic = 0x41424C42; // "BLBA"
    public const int FixedHeaderSize = 64;
    public const int MaxHeaderBytes = 64 * 1024;
    public const int MaxRecords = 4096;

    public static void WriteHeader(Span<byte> h, ulong segmentSeq, int headerBytes, int payloadBlocks, int recordCount, int offsetInSegment, ulong batchSeq)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(h, Magic);
        BinaryPrimitives.WriteUInt32LittleEndian(h[4..], 0);
        BinaryPrimitives.WriteUInt64LittleEndian(h[8..], segmentSeq);
        BinaryPrimitives.WriteInt32LittleEndian(h[16..], headerBytes);
        BinaryPrimitives.WriteInt32LittleEndian(h[20..], payloadBlocks);
        BinaryPrimitives.WriteInt32LittleEndian(h[24..], recordCount);
        BinaryPrimitives.WriteInt32LittleEndian(h[28..], offsetInSegment);
        BinaryPrimitives.WriteUInt64LittleEndian(h[32..], batchSeq);
        h[40..FixedHeaderSize].Clear();
        var crc = Crc32C.Compute(h[..headerBytes]);
        BinaryPrimitives.WriteUInt32LittleEndian(h[4..], crc);
    }

    /// <summary>Reads the first header block's fixed fields; validates only what the first block holds.</summary>
    public static bool TryReadPrefix(ReadOnlySpan<byte> firstBlock, ulong expectedSeq, int offsetInSegment, int batchLimit,
        out int headerBytes, out int payloadBlocks, out string? problem)
    {
        headerBytes = 0;
        payloadBlocks = 0;
        problem = null;
        if (BinaryPrimitives.ReadUInt32LittleEndian(firstBlock) != Magic)
        {
            problem = "no batch magic";
            return false;
        }
        if (BinaryPrimitives.ReadUInt64LittleEndian(firstBlock[8..]) != expectedSeq)
        {
            problem = "batch from an earlier use of this segment";
            return false;
        }
        headerBytes = BinaryPrimitives.ReadInt32LittleEndian(firstBlock[16..]);
        payloadBlocks = BinaryPrimitives.ReadInt32LittleEndian(firstBlock[20..]);
        var recordCount = BinaryPrimitives.ReadInt32LittleEndian(firstBlock[24..]);
        var storedOffset = BinaryPrimitives.ReadInt32LittleEndian(firstBlock[28..]);
        if (headerBytes < PoolLayout.BlockSize || headerBytes > MaxHeaderBytes || headerBytes % PoolLayout.BlockSize != 0
            || payloadBlocks < 0 || recordCount <= 0 || recordCount > MaxRecords || storedOffset != offsetInSegment
            || (long)offsetInSegment + headerBytes + ((long)payloadBlocks << PoolLayout.BlockShift) > batchLimit)
        {
            problem = "batch header fields out of range";
            return false;
        }
        return true;
    }

    /// <summary>Verifies the whole header region's CRC and decodes every record, bounds-checked.</summary>
    public static bool TryDecodeRecords(ReadOnlySpan<byte> header, int payloadBlocks, List<DecodedRecord> records, out string? problem)
    {
        records.Clear();
        problem = null;
        var headerBytes = header.Length;
        var stored = BinaryPrimitives.ReadUInt32LittleEndian(header[4..]);
        var crc = Crc32C.Update(~0u, header[..4]);
        crc = Crc32C.Update(crc, [0, 0, 0, 0]);
        crc = ~Crc32C.Update(crc, header[8..]);
        if (crc != stored)
        {
            problem = "batch header checksum mismatch (torn or corrupt)";
            return false;
        }
        var count = BinaryPrimitives.ReadInt32LittleEndian(header[24..]);
        var pos = FixedHeaderSize;
        for (var i = 0; i < count; i++)
        {
            if (pos + RecordDescriptor.Size > headerBytes)
            {
                problem = "record descriptor beyond the batch header";
                return false;
            }
            var d = RecordDescriptor.Read(header[pos..]);
            if (d.BlockCount < 0 || d.InlineLength > headerBytes)
            {
                problem = "record block count out of range";
                return false;
            }
            var len = Size(d);
            if (len < 0 || pos + len > headerBytes)
            {
                problem = "record beyond the batch header";
                return false;
            }
            var inPlace = (d.Flags & RecordFlags.InPlace) != 0;
            if (inPlace && (d.Kind != RecordKind.Data || d.BlockCount <= 0 || d.Aux < 0 || (d.Flags & RecordFlags.Relocated) != 0))
            {
                problem = "in-place record out of range";
                return false;
            }
            if (d.Kind == RecordKind.Data && !inPlace && (d.PayloadBlock < 0 || d.BlockCount <= 0 || (long)d.PayloadBlock + d.BlockCount > payloadBlocks))
            {
                problem = "data record payload outside the batch";
                return false;
            }
            var encoded = header.Slice(pos, len);
            if (RecordDescriptor.ComputeCrc(encoded) != d.Crc)
            {
                problem = "record checksum mismatch";
                return false;
            }
            records.Add(new DecodedRecord(d, pos + RecordDescriptor.Size, d.Kind == RecordKind.Data ? d.BlockCount : 0,
                pos + RecordDescriptor.Size + (d.Kind == RecordKind.Data ? 4 * d.BlockCount : 0)));
            pos += len;
        }
        return true;
    }

    private static int Size(in RecordDescriptor d) => d.Kind == RecordKind.Data
        ? RecordDescriptor.Align8(RecordDescriptor.Size + 4 * d.BlockCount + d.InlineLength)
        : RecordDescriptor.Align8(RecordDescriptor.Size + d.InlineLength);
}

/// <summary>A record decoded from a batch header; offsets are into the header region.</summary>
public readonly record struct DecodedRecord(RecordDescriptor Descriptor, int CrcOffset, int CrcCount, int InlineOffset);
