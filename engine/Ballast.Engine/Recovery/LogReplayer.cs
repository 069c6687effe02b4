using Ballast.Engine.Buffers;
using Ballast.Engine.Log;
using Ballast.Engine.Maps;
using Ballast.Engine.Storage;
using Ballast.Engine.Volumes;

namespace Ballast.Engine.Recovery;

/// <summary>
/// Replays the log from the checkpoint's position: follows seal records from segment to segment,
/// verifies every batch (header CRC, record CRCs, a CRC per payload block) and stops at the first
/// one that fails — the torn or unsynced tail. Nothing after that point is applied.
/// </summary>
internal sealed class LogReplayer : IDisposable
{
    private readonly IPoolStorage _storage;
    private readonly PoolLayout _layout;
    private readonly SegmentTable _segments;
    private readonly Guid _poolId;
    private readonly AlignedBuffer _buffer;
    // Read-ahead over the log: one large read serves many batches (a pread per batch made
    // replaying a 1 GiB tail of 4 KiB writes take 4 s). Grows for a batch larger than the
    // options now allow (they may have been lowered since it was written).
    private AlignedBuffer _window;
    private uint[] _crcs;
    private int _windowSegment = -1;
    private long _windowStart;
    private int _windowLength;
    private readonly List<DecodedRecord> _records = [];
    private readonly uint[] _inPlaceCrcs = new uint[BatchFormat.MaxHeaderBytes / 4];

    public LogReplayer(IPoolStorage storage, PoolLayout layout, SegmentTable segments, Guid poolId, int maxBatchPayloadBytes)
    {
        _storage = storage;
        _layout = layout;
        _segments = segments;
        _poolId = poolId;
        _buffer = new AlignedBuffer(BatchFormat.MaxHeaderBytes + maxBatchPayloadBytes);
        _window = new AlignedBuffer((int)Math.Min(layout.SegmentSize, Math.Max(WindowBytes, _buffer.Length)));
        _crcs = new uint[_window.Length / PoolLayout.BlockSize];
    }

    /// <summary>Called for each valid record in log order, with the physical block of its payload.</summary>
    public delegate void RecordHandler(in RecordDescriptor record, ReadOnlySpan<byte> inline, long payloadPhys, ReadOnlySpan<uint> blockCrcs);

    public LogPosition Replay(LogPosition start, RecoveryReport report, RecordHandler apply, out ulong lastSeq)
    {
        var seg = start.Segment;
        var seq = start.Seq;
        var offset = start.Offset;
        lastSeq = seq;
        if (!ReadSegmentHeader(seg, seq))
        {
            report.StopReason = $"segment {seg} does not start the log with sequence {seq}";
            return new LogPosition(seg, seq, 0);
        }
        _segments.MarkUsed(seg, SegmentState.Log, seq);
        report.ReplayedSegments = 1;
        while (true)
        {
            // Batches end by BatchLimit; a seal may sit in the reserved last block.
            if (offset > _layout.SegmentSize - PoolLayout.BlockSize)
            {
                report.StopReason = "segment full without a seal";
                break;
            }
            var span = Window(seg, offset, PoolLayout.BlockSize);
            if (!BatchFormat.TryReadPrefix(span, seq, offset, _layout.SegmentSize, out var headerBytes, out var payloadBlocks, out var problem))
            {
                report.StopReason = problem!;
                break;
            }
            if (offset + headerBytes + ((long)payloadBlocks << PoolLayout.BlockShift) > _layout.SegmentSize)
            {
                report.StopReason = "batch runs past the end of its segment";
                break;
            }
            var total = headerBytes + (payloadBlocks << PoolLayout.BlockShift);
            EnsureWindow(total);
            var crcs = _crcs;
            span = Window(seg, offset, total);
            if (!BatchFormat.TryDecodeRecords(span[..headerBytes], payloadBlocks, _records, out problem)
                || !VerifyPayload(span[..total], headerBytes, crcs, out problem))
            {
                report.StopReason = problem!;
                break;
            }
            var payloadBase = _layout.BlockAddress(seg, offset + headerBytes);
            var e = _segments[seg];
            var sealed_ = false;
            foreach (var r in _records)
            {
                var d = r.Descriptor;
                var inline = span.Slice(r.InlineOffset, d.InlineLength);
                if (d.Kind == RecordKind.Seal)
                {
                    var next = (int)d.Aux;
                    var nextSeq = (ulong)d.Lba;
                    e.WriteOffset = offset + _layout.SealBytes;
                    SegmentSummary.TryReadSealInline(inline, out e.SummaryCrc);
                    if (next < 0 || next >= _layout.SegmentCount || next == seg || nextSeq <= seq || !ReadSegmentHeader(next, nextSeq))
                    {
                        // The seal was written but the segment it names never got its header:
                        // the log ends at the seal, which recovery overwrites.
                        report.StopReason = $"sealed segment {seg} names segment {next} (seq {nextSeq}) which was never started";
                        report.ReplayedBatches++;
                        return new LogPosition(seg, seq, offset);
                    }
                    e.Sealed = true;
                    _segments.MarkUsed(next, SegmentState.Log, nextSeq);
                    report.ReplayedSegments++;
                    seg = next;
                    seq = nextSeq;
                    lastSeq = seq;
                    offset = _layout.FirstBatchOffset;
                    sealed_ = true;
                    break;
                }
                var phys = -1L;
                if (d.Kind == RecordKind.Data && (d.Flags & RecordFlags.InPlace) != 0)
                {
                    ReplayInPlace(d, span.Slice(r.CrcOffset, 4 * d.BlockCount), inline, seq, report, apply);
                }
                else if (d.Kind == RecordKind.Data)
                {
                    phys = payloadBase + d.PayloadBlock;
                    var blockCrcs = crcs.AsSpan(d.PayloadBlock, d.BlockCount);
                    _segments.SetCrcs(phys, blockCrcs);
                    e.WrittenBlocks += d.BlockCount;
                    apply(d, inline, phys, blockCrcs);
                }
                else
                {
                    apply(d, inline, phys, default);
                }
                report.ReplayedRecords++;
            }
            report.ReplayedBatches++;
            report.ReplayedBytes += total;
            if (!sealed_)
            {
                offset += total;
                e.WriteOffset = offset;
            }
        }
        CountDiscarded(seg, seq, offset, report);
        return new LogPosition(seg, seq, offset);
    }

    /// <summary>
    /// A record whose data was written into dead blocks of an older segment. The data was synced
    /// before the record was written, so it was on disk. A block that no longer matches its CRC
    /// was either replaced by a later write and recycled again (holes are handed out only after
    /// the records that killed them are durable, so that later record lies further on in this
    /// tail and maps the block elsewhere), or damaged since. Either way the record is applied
    /// whole, with its own CRCs: a replaced block is superseded, and a damaged one reads as a
    /// checksum error, never as an older mapping whose block may since belong to someone else.
    /// Recycled segments are not cleaned while records into them lie in the replayed tail.
    /// </summary>
    private void ReplayInPlace(in RecordDescriptor d, ReadOnlySpan<byte> storedCrcs, ReadOnlySpan<byte> inline, ulong batchSeq, RecoveryReport report, RecordHandler apply)
    {
        var first = d.Aux;
        var last = first + d.BlockCount - 1;
        if (!_layout.IsDataBlock(first) || !_layout.IsDataBlock(last) || _layout.SegmentOf(first) != _layout.SegmentOf(last)
            || d.BlockCount > _inPlaceCrcs.Length)
        {
            // Not a place this pool writes client data to: a damaged record that passed its CRC.
            report.InPlaceBlocksMismatched += d.BlockCount;
            return;
        }
        var target = _segments[_layout.SegmentOf(first)];
        if (target.State != SegmentState.Log || !target.Sealed)
        {
            report.InPlaceBlocksMismatched += d.BlockCount;
            return;
        }
        var chunk = _buffer.Length >> PoolLayout.BlockShift;
        for (var from = 0; from < d.BlockCount; from += chunk)
        {
            var n = Math.Min(chunk, d.BlockCount - from);
            var data = _buffer.Span[..(n << PoolLayout.BlockShift)];
            _storage.Read((first + from) << PoolLayout.BlockShift, data);
            for (var b = 0; b < n; b++)
            {
                var stored = System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(storedCrcs[(4 * (from + b))..]);
                _inPlaceCrcs[from + b] = stored;
                if (Crc32C.Compute(data.Slice(b << PoolLayout.BlockShift, PoolLayout.BlockSize)) != stored)
                {
                    report.InPlaceBlocksMismatched++;
                }
            }
        }
        var crcs = _inPlaceCrcs.AsSpan(0, d.BlockCount);
        _segments.SetRecycled(first, crcs, batchSeq);
        apply(d, inline, first, crcs);
    }

    private bool VerifyPayload(ReadOnlySpan<byte> batch, int headerBytes, uint[] crcs, out string? problem)
    {
        problem = null;
        foreach (var r in _records)
        {
            var d = r.Descriptor;
            if (d.Kind != RecordKind.Data || (d.Flags & RecordFlags.InPlace) != 0)
            {
                continue;
            }
            for (var b = 0; b < d.BlockCount; b++)
            {
                var stored = System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(batch[(r.CrcOffset + 4 * b)..]);
                var block = batch.Slice(headerBytes + ((d.PayloadBlock + b) << PoolLayout.BlockShift), PoolLayout.BlockSize);
                if (Crc32C.Compute(block) != stored)
                {
                    problem = $"payload block {d.PayloadBlock + b} of the batch fails its checksum (torn write)";
                    return false;
                }
                crcs[d.PayloadBlock + b] = stored;
            }
        }
        return true;
    }

    private bool ReadSegmentHeader(int seg, ulong seq)
    {
        var span = _buffer.Span[..PoolLayout.BlockSize];
        _storage.Read(_layout.SegmentOffset(seg), span);
        return SegmentHeader.TryDecode(span, out var h) && h.Kind == SegmentKind.Log && h.PoolId == _poolId && h.Index == seg && h.Seq == seq;
    }

    /// <summary>Looks past the stop point for batches of this segment's sequence, to report what was dropped.</summary>
    private void CountDiscarded(int seg, ulong seq, int offset, RecoveryReport report)
    {
        var limit = _layout.BatchLimit;
        var chunk = _buffer.Length;
        for (var o = offset; o < limit; o += chunk)
        {
            var n = Math.Min(chunk, limit - o);
            var span = _buffer.Span[..n];
            _storage.Read(_layout.SegmentOffset(seg) + o, span);
            for (var b = 0; b < n; b += PoolLayout.BlockSize)
            {
                var block = span.Slice(b, PoolLayout.BlockSize);
                if (System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(block) == BatchFormat.Magic
                    && System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(block[8..]) == seq
                    && System.Buffers.Binary.BinaryPrimitives.ReadInt32LittleEndian(block[28..]) == o + b)
                {
                    report.DiscardedBatches++;
                    var hb = System.Buffers.Binary.BinaryPrimitives.ReadInt32LittleEndian(block[16..]);
                    var pb = System.Buffers.Binary.BinaryPrimitives.ReadInt32LittleEndian(block[20..]);
                    if (hb > 0 && pb >= 0 && pb < (1 << 20))
                    {
                        report.DiscardedBytes += hb + ((long)pb << PoolLayout.BlockShift);
                    }
                }
            }
        }
    }

    private const int WindowBytes = 8 << 20;

    /// <summary>Makes the window (and the CRC scratch) hold a batch of <paramref name="bytes"/>.</summary>
    private void EnsureWindow(int bytes)
    {
        if (bytes > _window.Length)
        {
            ((IDisposable)_window).Dispose();
            _window = new AlignedBuffer((bytes + PoolLayout.BlockSize - 1) & ~(PoolLayout.BlockSize - 1));
            _windowSegment = -1;
        }
        if (_crcs.Length < bytes >> PoolLayout.BlockShift)
        {
            _crcs = new uint[bytes >> PoolLayout.BlockShift];
        }
    }

    /// <summary>Bytes [offset, offset+length) of a segment, from the read-ahead window (refilled from offset when they are not all in it).</summary>
    private Span<byte> Window(int seg, long offset, int length)
    {
        if (seg != _windowSegment || offset < _windowStart || offset + length > _windowStart + _windowLength)
        {
            var n = (int)Math.Min(_window.Length, _layout.SegmentSize - offset);
            _storage.Read(_layout.SegmentOffset(seg) + offset, _window.Span[..n]);
            _windowSegment = seg;
            _windowStart = offset;
            _windowLength = n;
        }
        return _window.Span.Slice((int)(offset - _windowStart), length);
    }

    public void Dispose()
    {
        ((IDisposable)_buffer).Dispose();
        ((IDisposable)_window).Dispose();
    }
}
