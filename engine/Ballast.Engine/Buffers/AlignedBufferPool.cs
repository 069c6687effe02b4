namespace Ballast.Engine.Buffers;

/// <summary>
/// A pool of <see cref="AlignedBuffer"/>s of one size. Rent and Return do not allocate once warm:
/// a lock and an array stack, which on two cores beats lock-free structures that allocate nodes.
/// <see cref="Trim"/> frees what a burst left behind: the buffers that stayed idle since the last trim.
/// </summary>
public sealed class AlignedBufferPool : IDisposable
{
    private readonly object _lock = new();
    private readonly AlignedBuffer[] _free;
    private int _count;
    // Fewest idle buffers since the last trim: that many were not needed in the interval.
    private int _lowWater;
    private bool _disposed;

    public AlignedBufferPool(int bufferSize, int maxRetained)
    {
        BufferSize = bufferSize;
        _free = new AlignedBuffer[maxRetained];
    }

    public int BufferSize { get; }

    /// <summary>Buffers kept for reuse now.</summary>
    public int IdleCount
    {
        get
        {
            lock (_lock)
            {
                return _count;
            }
        }
    }

    public AlignedBuffer Rent()
    {
        lock (_lock)
        {
            if (_count > 0)
            {
                var b = _free[--_count];
                _free[_count] = null!;
                _lowWater = Math.Min(_lowWater, _count);
                return b;
            }
            _lowWater = 0;
        }
        return new AlignedBuffer(BufferSize);
    }

    public void Return(AlignedBuffer buffer)
    {
        lock (_lock)
        {
            if (!_disposed && _count < _free.Length)
            {
                _free[_count++] = buffer;
                return;
            }
        }
        ((IDisposable)buffer).Dispose();
    }

    /// <summary>Frees the buffers no rent needed since the previous call; returns how many.</summary>
    public int Trim()
    {
        lock (_lock)
        {
            var release = _lowWater;
            for (var i = 0; i < release; i++)
            {
                var b = _free[--_count];
                _free[_count] = null!;
                ((IDisposable)b).Dispose();
            }
            _lowWater = _count;
            return release;
        }
    }

    public void Dispose()
    {
        lock (_lock)
        {
            _disposed = true;
            for (var i = 0; i < _count; i++)
            {
                ((IDisposable)_free[i]).Dispose();
                _free[i] = null!;
            }
            _count = 0;
            _lowWater = 0;
        }
    }
}
