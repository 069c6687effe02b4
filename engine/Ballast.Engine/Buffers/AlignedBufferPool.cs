namespace Ballast.Engine.Buffers;

/// <summary>
/// A pool of <see cref="AlignedBuffer"/>s of one size. Rent and Return do not allocate once warm:
/// a lock and an array stack, which on two cores beats lock-free structures that allocate nodes.
/// </summary>
public sealed class AlignedBufferPool : IDisposable
{
    private readonly object _lock = new();
    private readonly AlignedBuffer[] _free;
    private int _count;
    private bool _disposed;

    public AlignedBufferPool(int bufferSize, int maxRetained)
    {
        BufferSize = bufferSize;
        _free = new AlignedBuffer[maxRetained];
    }

    public int BufferSize { get; }

    public AlignedBuffer Rent()
    {
        lock (_lock)
        {
            if (_count > 0)
            {
                var b = _free[--_count];
                _free[_count] = null!;
                return b;
            }
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
        }
    }
}
