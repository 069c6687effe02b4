using System.Buffers.Binary;
using Ballast.Engine.Buffers;
using Ballast.Engine.Log;
using Ballast.Engine.Storage;

namespace Ballast.Engine.Checkpoints;

/// <summary>
/// Reads a checkpoint blob back from its segments with bounds-checked primitives; the CRC over
/// everything read is compared with the superblock's at the end.
/// </summary>
internal sealed class CheckpointSource : IDisposable
{
    private const int ChunkSize = 1 << 20;
    private readonly IPoolStorage _storage;
    private readonly PoolLayout _layout;
    private readonly int[] _segments;
    private readonly long _length;
    private readonly Guid _poolId;
    private readonly AlignedBuffer _buffer = new(ChunkSize);
    private int _segIndex = -1;
    private int _segOffset;
    private int _pos;
    private int _fill;
    private long _consumed;
    private uint _crc = ~0u;

    public CheckpointSource(IPoolStorage storage, PoolLayout layout, Superblock sb)
    {
        _storage = storage;
        _layout = layout;
        _segments = sb.CheckpointSegments;
        _length = sb.CheckpointLength;
        _poolId = sb.PoolId;
        foreach (var s in _segments)
        {
            if (s < 0 || s >= layout.SegmentCount)
            {
                throw new InvalidDataException($"checkpoint segment {s} outside the pool");
            }
        }
        if (_length < 0 || _length > (long)_segments.Length * (layout.SegmentSize - PoolLayout.BlockSize))
        {
            throw new InvalidDataException($"checkpoint length {_length} does not fit its {_segments.Length} segments");
        }
    }

    public long Consumed => _consumed;
    public uint Crc => ~_crc;

    public byte U8()
    {
        Span<byte> b = stackalloc byte[1];
        Bytes(b);
        return b[0];
    }

    public uint U32()
    {
        Span<byte> b = stackalloc byte[4];
        Bytes(b);
        return BinaryPrimitives.ReadUInt32LittleEndian(b);
    }

    public int I32() => (int)U32();

    public ulong U64()
    {
        Span<byte> b = stackalloc byte[8];
        Bytes(b);
        return BinaryPrimitives.ReadUInt64LittleEndian(b);
    }

    public long I64() => (long)U64();

    /// <summary>A count that must lie in [0, max]; anything else means the checkpoint is corrupt.</summary>
    public int Count(int max, string what)
    {
        var n = I32();
        if (n < 0 || n > max)
        {
            throw new InvalidDataException($"checkpoint {what} count {n} out of range (0..{max})");
        }
        return n;
    }

    public void Bytes(Span<byte> dst)
    {
        if (_consumed + dst.Length > _length)
        {
            throw new InvalidDataException("checkpoint ends early");
        }
        while (!dst.IsEmpty)
        {
            if (_pos == _fill)
            {
                Refill();
            }
            var n = Math.Min(dst.Length, _fill - _pos);
            var src = _buffer.Span.Slice(_pos, n);
            src.CopyTo(dst);
            _crc = Crc32C.Update(_crc, src);
            _pos += n;
            _consumed += n;
            dst = dst[n..];
        }
    }

    private void Refill()
    {
        if (_segIndex < 0 || _segOffset == _layout.SegmentSize)
        {
            _segIndex++;
            if (_segIndex >= _segments.Length)
            {
                throw new InvalidDataException("checkpoint runs past its segments");
            }
            var seg = _segments[_segIndex];
            _storage.Read(_layout.SegmentOffset(seg), _buffer.Span[..PoolLayout.BlockSize]);
            if (!SegmentHeader.TryDecode(_buffer.Span, out var h) || h.Kind != SegmentKind.Checkpoint || h.Index != seg || h.PoolId != _poolId)
            {
                throw new InvalidDataException($"segment {seg} does not hold this pool's checkpoint");
            }
            _segOffset = PoolLayout.BlockSize;
        }
        var n = Math.Min(ChunkSize, _layout.SegmentSize - _segOffset);
        _storage.Read(_layout.SegmentOffset(_segments[_segIndex]) + _segOffset, _buffer.Span[..n]);
        _segOffset += n;
        _pos = 0;
        _fill = n;
    }

    public void Dispose() => ((IDisposable)_buffer).Dispose();
}
