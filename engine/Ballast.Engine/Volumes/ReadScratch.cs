using Ballast.Engine.Buffers;
using Ballast.Engine.Maps;

namespace Ballast.Engine.Volumes;

/// <summary>Per-request scratch for reads: an aligned bounce buffer and room for resolved map pieces. Pooled.</summary>
internal sealed class ReadScratch : IDisposable
{
    public const int BufferBytes = 1 << 20;
    public const int BufferBlocks = BufferBytes >> Log.PoolLayout.BlockShift;
    public const int MaxPieces = 64;

    public readonly AlignedBuffer Buffer = new(BufferBytes);
    public readonly MapPiece[] Pieces = new MapPiece[MaxPieces];

    /// <summary>The device read of each data piece in <see cref="Pieces"/>, all started before any is awaited.</summary>
    public readonly ValueTask[] Reads = new ValueTask[MaxPieces];

    public void Dispose() => ((IDisposable)Buffer).Dispose();
}

/// <summary>Lock-and-stack pool of <see cref="ReadScratch"/>; no allocation once warm.</summary>
internal sealed class ReadScratchPool : IDisposable
{
    private readonly object _lock = new();
    private readonly Stack<ReadScratch> _free = new();

    public ReadScratch Rent()
    {
        lock (_lock)
        {
            if (_free.Count > 0)
            {
                return _free.Pop();
            }
        }
        return new ReadScratch();
    }

    public void Return(ReadScratch s)
    {
        lock (_lock)
        {
            if (_free.Count < 128)
            {
                _free.Push(s);
                return;
            }
        }
        s.Dispose();
    }

    public void Dispose()
    {
        lock (_lock)
        {
            while (_free.Count > 0)
            {
                _free.Pop().Dispose();
            }
        }
    }
}
