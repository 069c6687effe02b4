using System.Buffers.Binary;
using Ballast.Engine.Buffers;
using Ballast.Engine.Log;
using Ballast.Engine.Storage;

namespace Ballast.Engine.Checkpoints;

/// <summary>
/// Streams checkpoint bytes into freshly allocated checkpoint segments through one aligned
/// buffer, computing the CRC as it goes. Nothing is referenced until the superblock points at it.
/// </summary>
internal sealed class CheckpointSink : IDisposable
{
    private const int ChunkSize = 1 << 20;
    private readonly IPoolStorage _storage;
    private readonly PoolLayout _layout;
    private readonly SegmentTable _segments;
    private readonly Guid _poolId;
    private readonly ulong _generation;
    private readonly AlignedBuffer _buffer = new(ChunkSize);
    private int _fill;
    private int _segment = -1;
    private int _segmentOffset;
    private uint _crc = ~0u;

    public CheckpointSink(IPoolStorage storage, PoolLayout layout, SegmentTable segments, Guid poolId, ulong generation)
    {
        _storage = storage;
        _layout = layout;
        _segments = segments;
        _poolId = poolId;
        _generation = generation;
    }

    public List<int> Segments { get; } = [];
    public long Length { get; private set; }
    public uint Crc => ~_crc;

    public void U8(byte v) => Bytes([v]);

    public void U32(uint v)
    {
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(b, v);
        Bytes(b);
    }

    public void I32(int v) => U32((uint)v);

    public void U64(ulong v)
    {
        Span<byte> b = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(b, v);
        Bytes(b);
    }

    public void I64(long v) => U64((ulong)v);

    public void Bytes(ReadOnlySpan<byte> data)
    {
        _crc = Crc32C.Update(_crc, data);
        Length += data.Length;
        while (!data.IsEmpty)
        {
            var n = Math.Min(data.Length, ChunkSize - _fill);
            data[..n].CopyTo(_buffer.Span[_fill..]);
            _fill += n;
            data = data[n..];
            if (_fill == ChunkSize)
            {
                FlushChunk();
            }
        }
    }

    /// <summary>Writes what is buffered (padded to a block) and makes it durable.</summary>
    public void Complete()
    {
        if (_fill > 0)
        {
            var padded = (_fill + PoolLayout.BlockSize - 1) & ~(PoolLayout.BlockSize - 1);
            _buffer.Span[_fill..padded].Clear();
            WriteOut(_buffer.Span[..padded]);
            _fill = 0;
        }
        _storage.Sync();
    }

    private void FlushChunk()
    {
        WriteOut(_buffer.Span[.._fill]);
        _fill = 0;
    }

    private void WriteOut(ReadOnlySpan<byte> data)
    {
        while (!data.IsEmpty)
        {
            if (_segment < 0 || _segmentOffset == _layout.SegmentSize)
            {
                OpenSegment();
            }
            var n = Math.Min(data.Length, _layout.SegmentSize - _segmentOffset);
            _storage.Write(_layout.SegmentOffset(_segment) + _segmentOffset, data[..n]);
            _segmentOffset += n;
            data = data[n..];
        }
    }

    private void OpenSegment()
    {
        if (Segments.Count >= Superblock.MaxCheckpointSegments)
        {
            throw new IOException("checkpoint too large for the superblock's segment list");
        }
        var seg = _segments.Allocate(SegmentState.Checkpoint, 0);
        if (seg < 0)
        {
            throw new IOException("no free segment for the checkpoint");
        }
        Segments.Add(seg);
        _segments[seg].Seq = _generation;
        _storage.Allocate(_layout.SegmentOffset(seg), _layout.SegmentSize);
        using var header = new AlignedBuffer(PoolLayout.BlockSize);
        new SegmentHeader(SegmentKind.Checkpoint, _poolId, seg, _generation).Encode(header.Span);
        _storage.Write(_layout.SegmentOffset(seg), header.Span);
        _segment = seg;
        _segmentOffset = PoolLayout.BlockSize;
    }

    /// <summary>Gives back the segments of a checkpoint that was not committed.</summary>
    public void Abandon()
    {
        foreach (var s in Segments)
        {
            _segments.Release(s);
        }
        Segments.Clear();
    }

    public void Dispose() => ((IDisposable)_buffer).Dispose();
}
