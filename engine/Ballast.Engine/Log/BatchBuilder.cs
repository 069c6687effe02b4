using Ballast.Engine.Buffers;

namespace Ballast.Engine.Log;

/// <summary>
/// Assembles one batch in a single aligned buffer so the whole group commit is one write.
/// The header region is built in a scratch area and copied in front of the payload at the end:
/// the buffer reserves <see cref="BatchFormat.MaxHeaderBytes"/> before the payload for that.
/// A large payload in an aligned buffer may instead be borrowed: the batch then goes out as a
/// gather write of its buffer's runs and the borrowed payloads, in place order, without the copy
/// (at 1 MiB writes the copy was a quarter of the appender's time).
/// </summary>
internal sealed class BatchBuilder : IDisposable
{
    /// <summary>Payloads from this size up are borrowed when they are aligned; below it a copy costs less than a gather entry.</summary>
    public const int BorrowMinBytes = 64 << 10;
    // Each borrowed payload adds at most two parts to the write (itself and the run after it).
    private const int MaxBorrowed = (Interop.Libc.IovMax - 1) / 2;

    private readonly AlignedBuffer _buffer;
    private readonly byte[] _header = new byte[BatchFormat.MaxHeaderBytes];
    private readonly List<(int FirstBlock, ReadOnlyMemory<byte> Payload)> _borrowed = [];
    private readonly List<ReadOnlyMemory<byte>> _parts = [];
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

    /// <summary>True when some payload of this batch was borrowed, not copied: the batch is written with <see cref="Parts"/>.</summary>
    public bool HasBorrowed => _borrowed.Count > 0;

    public long BorrowedBytes
    {
        get
        {
            long n = 0;
            foreach (var (_, payload) in _borrowed)
            {
                n += payload.Length;
            }
            return n;
        }
    }

    public void Reset()
    {
        _headerUsed = BatchFormat.FixedHeaderSize;
        _payloadBlocks = 0;
        _records = 0;
        _borrowed.Clear();
        _parts.Clear();
    }

    /// <summary>
    /// True when <paramref name="payload"/> may be borrowed: large, in whole blocks, in an
    /// aligned native buffer (O_DIRECT takes it as it is), and the batch has gather entries left.
    /// The caller must keep it unchanged until the batch is written.
    /// </summary>
    public bool CanBorrow(ReadOnlyMemory<byte> payload) =>
        payload.Length >= BorrowMinBytes && _borrowed.Count < MaxBorrowed && AlignedBuffer.IsAligned(payload);

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

    /// <summary>Adds a data record whose payload is borrowed (see <see cref="CanBorrow"/>), not copied; returns the index of its first payload block.</summary>
    public int AddBorrowed(ref RecordDescriptor d, ReadOnlySpan<uint> blockCrcs, ReadOnlyMemory<byte> payload)
    {
        System.Diagnostics.Debug.Assert(d.Kind == RecordKind.Data && (d.Flags & RecordFlags.InPlace) == 0 && CanBorrow(payload));
        var first = _payloadBlocks;
        _borrowed.Add((first, payload[..(d.BlockCount << PoolLayout.BlockShift)]));
        return Add(ref d, blockCrcs, default, default, copy: false);
    }

    /// <summary>Adds a record; returns the index of its first payload block in this batch (data) or -1.</summary>
    public int Add(ref RecordDescriptor d, ReadOnlySpan<uint> blockCrcs, ReadOnlySpan<byte> inline, ReadOnlySpan<byte> payload) =>
        Add(ref d, blockCrcs, inline, payload, copy: true);

    private int Add(ref RecordDescriptor d, ReadOnlySpan<uint> blockCrcs, ReadOnlySpan<byte> inline, ReadOnlySpan<byte> payload, bool copy)
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
        if (data && copy)
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

    /// <summary>What the last <see cref="Finish"/> returned, valid until the next <see cref="Reset"/>; without the borrowed payloads.</summary>
    public ReadOnlyMemory<byte> Finished { get; private set; }

    /// <summary>
    /// After <see cref="Finish"/> of a batch with borrowed payloads: the batch as parts to write
    /// back to back, the buffer's runs (header, copied payloads) between the borrowed ones.
    /// </summary>
    public ReadOnlySpan<ReadOnlyMemory<byte>> Parts()
    {
        _parts.Clear();
        var headerBytes = Finished.Length - (_payloadBlocks << PoolLayout.BlockShift);
        var from = 0;
        foreach (var (firstBlock, payload) in _borrowed)
        {
            var at = headerBytes + (firstBlock << PoolLayout.BlockShift);
            if (at > from)
            {
                _parts.Add(Finished[from..at]);
            }
            _parts.Add(payload);
            from = at + payload.Length;
        }
        if (from < Finished.Length)
        {
            _parts.Add(Finished[from..]);
        }
        return System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_parts);
    }

    private static int AlignBlock(int n) => (n + PoolLayout.BlockSize - 1) & ~(PoolLayout.BlockSize - 1);

    public void Dispose() => ((IDisposable)_buffer).Dispose();
}
