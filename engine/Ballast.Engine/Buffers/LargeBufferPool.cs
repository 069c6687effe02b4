namespace Ballast.Engine.Buffers;

/// <summary>
/// Aligned buffers for large client payloads, in power-of-two sizes from 64 KiB to 32 MiB.
/// A frontend that receives a large write into one of these lets the log write it to the device
/// from there (see <c>BatchBuilder.CanBorrow</c>) instead of copying it into the batch. Each size
/// keeps at most 64 MiB of idle buffers (and at least two), about what the shared array pool
/// kept on two cores: 64 requests of 1 MiB in flight reuse their buffers, deeper queues make and
/// free the rest. Only the sizes clients use fill up (the worst case, every size, is 640 MiB);
/// above 32 MiB a buffer is made and freed each time. The shared pool trims every 30 s: buffers
/// no rent needed for a whole interval are freed, so the memory a burst of large I/O took comes
/// back within a minute of it while a steady load keeps what it uses.
/// </summary>
public sealed class LargeBufferPool : IDisposable
{
    public const int MinBytes = 64 << 10;
    public const int MaxPooledBytes = 32 << 20;
    private const int MinShift = 16;
    private const long IdleBytesPerSize = 64L << 20;

    private readonly AlignedBufferPool[] _sizes;
    private readonly Timer? _trim;

    /// <param name="trimInterval">How often idle buffers are trimmed; null: only by <see cref="Trim"/>.</param>
    public LargeBufferPool(TimeSpan? trimInterval = null)
    {
        _sizes = new AlignedBufferPool[System.Numerics.BitOperations.Log2(MaxPooledBytes) - MinShift + 1];
        for (var i = 0; i < _sizes.Length; i++)
        {
            var size = MinBytes << i;
            _sizes[i] = new AlignedBufferPool(size, (int)Math.Max(2, IdleBytesPerSize / size));
        }
        if (trimInterval is { } every)
        {
            _trim = new Timer(static state => ((LargeBufferPool)state!).Trim(), this, every, every);
        }
    }

    /// <summary>One pool for the process: buffers move between connections.</summary>
    public static LargeBufferPool Shared { get; } = new(TimeSpan.FromSeconds(30));

    /// <summary>Bytes held in idle buffers now.</summary>
    public long IdleBytes => _sizes.Sum(p => (long)p.IdleCount * p.BufferSize);

    /// <summary>Frees, in every size, the buffers no rent needed since the previous trim; returns the bytes freed.</summary>
    public long Trim() => _sizes.Sum(p => (long)p.Trim() * p.BufferSize);

    /// <summary>A buffer of at least <paramref name="length"/> bytes (at least <see cref="MinBytes"/>).</summary>
    public AlignedBuffer Rent(int length)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(length);
        if (length > MaxPooledBytes)
        {
            return new AlignedBuffer((length + AlignedBuffer.Alignment - 1) & ~(AlignedBuffer.Alignment - 1));
        }
        return _sizes[SizeIndex(length)].Rent();
    }

    public void Return(AlignedBuffer buffer)
    {
        if (buffer.Length > MaxPooledBytes || buffer.Length < MinBytes || !System.Numerics.BitOperations.IsPow2(buffer.Length))
        {
            ((IDisposable)buffer).Dispose();
            return;
        }
        _sizes[SizeIndex(buffer.Length)].Return(buffer);
    }

    private static int SizeIndex(int length) =>
        length <= MinBytes ? 0 : System.Numerics.BitOperations.Log2((uint)length - 1) + 1 - MinShift;

    public void Dispose()
    {
        _trim?.Dispose();
        foreach (var p in _sizes)
        {
            p.Dispose();
        }
    }
}
