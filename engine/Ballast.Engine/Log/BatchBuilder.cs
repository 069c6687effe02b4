using Ballast.Engine.Buffers;

namespace Ballast.Engine.Log;

/// <summary>
/// Assembles one batch in a single aligned buffer so the whole group commit is one write.
/// The header region is built in a scratch area and copied in front of the payload at the end:
/// the buffer reserves <see cref="BatchFormat.MaxHeaderBytes"/> before the payload for that.
/// </summary>
internal sealed class BatchBuilder : IDisposable
{
    private readonly AlignedBuffer _buffer;
    private readonly byte[] _header = new byte[BatchFormat.MaxHeaderBytes];
    private int _headerUsed;
    private int _payloadBlocks;
    private int _records;

    public BatchBuilder(int maxPayloadBytes)
    {
        MaxPayloadBytes = maxPayloadBytes;
        _buffer = new AlignedBuffer(BatchFormat.MaxHeaderBytes + maxPayloadBytes);
        Reset();
    }

    public int MaxPayloadBytes { get; }
    public int RecordCount => _records;
    public int PayloadBlocks => _payloadBlocks;
    public bool IsEmpty => _records == 0;

    public void Reset()
    {
        _headerUsed = BatchFormat.FixedHeaderSize;
        _payloadBlocks = 0;
        _records = 0;
    }

    /// <summary>Bytes the batch would occupy on disk after adding a record of this shape.</summary>
    public int SizeWith(int blockCount, int inlineLength, bool data)
    {
        var recLen = RecordDescriptor.Align8(RecordDescriptor.Size + (data ? 4 * blockCount : 0) + inlineLength);
        var header = AlignBlock(_headerUsed + recLen);
        return header + ((_payloadBlocks + (data ? blockCount : 0)) << PoolLayout.BlockShift);
    }

    public int CurrentSize => _records == 0 ? 0 : AlignBlock(_headerUsed) + (_payloadBlocks << PoolLayout.BlockShift);

    /// <summary>True when a record of this shape fits the buffer and <paramref name="spaceLeft"/> bytes of segment.</summary>
    public bool Fits(int blockCount, int inlineLength, bool data, int spaceLeft)
    {
        if (_records >= BatchFormat.MaxRecords)
        {
            return false;
        }
        var recLen = RecordDescriptor.Align8(RecordDescriptor.Size + (data ? 4 * blockCount : 0) + inlineLength);
        if (_headerUsed + recLen > BatchFormat.MaxHeaderBytes)
        {
            return false;
        }
        if (data && (_payloadBlocks + blockCount) << PoolLayout.BlockShift > MaxPayloadBytes)
        {
            return false;
        }
        return SizeWith(blockCount, inlineLength, data) <= spaceLeft;
    }

    /// <summary>True when an in-place data record (descriptor and CRCs only, its payload elsewhere) fits.</summary>
    public bool FitsInPlace(int blockCount, int spaceLeft)
    {
        if (_records >= BatchFormat.MaxRecords)
        {
            return false;
        }
        var recLen = RecordDescriptor.Align8(RecordDescriptor.Size + 4 * blockCount);
        return _headerUsed + recLen <= BatchFormat.MaxHeaderBytes
            && AlignBlock(_headerUsed + recLen) + (_payloadBlocks << PoolLayout.BlockShift) <= spaceLeft;
    }

    /// <summary>Adds a record; returns the index of its first payload block in this batch (data) or -1.</summary>
    public int Add(ref RecordDescriptor d, ReadOnlySpan<uint> blockCrcs, ReadOnlySpan<byte> inline, ReadOnlySpan<byte> payload)
    {
        // An in-place record's payload is written into recycled blocks, not into the batch.
        var data = d.Kind == RecordKind.Data && (d.Flags & RecordFlags.InPlace) == 0;
        d.InlineLength = checked((ushort)inline.Length);
        d.PayloadBlock = data ? _payloadBlocks : 0;
        var len = d.EncodedLength;
        var rec = _header.AsSpan(_headerUsed, len);
        rec.Clear();
        d.Crc = 0;
        d.Write(rec);
        var p = RecordDescriptor.Size;
        if (d.Kind == RecordKind.Data)
        {
            for (var i = 0; i < d.BlockCount; i++)
            {
                System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(rec[p..], blockCrcs[i]);
                p += 4;
            }
        }
        if (data)
        {
            payload[..(d.BlockCount << PoolLayout.BlockShift)].CopyTo(_buffer.Span[(BatchFormat.MaxHeaderBytes + (_payloadBlocks << PoolLayout.BlockShift))..]);
        }
        inline.CopyTo(rec[p..]);
        d.Crc = RecordDescriptor.ComputeCrc(rec);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(rec[36..], d.Crc);
        _headerUsed += len;
        _records++;
        var first = data ? _payloadBlocks : -1;
        if (data)
        {
            _payloadBlocks += d.BlockCount;
        }
        return first;
    }

    /// <summary>Seals the header and returns the bytes to write: [header region][payload].</summary>
    public ReadOnlySpan<byte> Finish(ulong segmentSeq, int offsetInSegment, ulong batchSeq, out int headerBytes)
    {
        headerBytes = AlignBlock(_headerUsed);
        var h = _header.AsSpan(0, headerBytes);
        h[_headerUsed..].Clear();
        BatchFormat.WriteHeader(h, segmentSeq, headerBytes, _payloadBlocks, _records, offsetInSegment, batchSeq);
        var start = BatchFormat.MaxHeaderBytes - headerBytes;
        h.CopyTo(_buffer.Span[start..]);
        Finished = _buffer.Memory.Slice(start, headerBytes + (_payloadBlocks << PoolLayout.BlockShift));
        return Finished.Span;
    }

    /// <summary>What the last <see cref="Finish"/> returned, valid until the next <see cref="Reset"/>.</summary>
    public ReadOnlyMemory<byte> Finished { get; private set; }

    private static int AlignBlock(int n) => (n + PoolLayout.BlockSize - 1) & ~(PoolLayout.BlockSize - 1);

    public void Dispose() => ((IDisposable)_buffer).Dispose();
}
