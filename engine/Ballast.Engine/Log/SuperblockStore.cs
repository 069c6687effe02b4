using Ballast.Engine.Buffers;
using Ballast.Engine.Storage;

namespace Ballast.Engine.Log;

/// <summary>Reads and writes the two superblock slots; every write is synced before it returns.</summary>
internal sealed class SuperblockStore : IDisposable
{
    private readonly IPoolStorage _storage;
    private readonly AlignedBuffer _buffer = new(PoolLayout.BlockSize);
    private readonly object _lock = new();

    public SuperblockStore(IPoolStorage storage, Superblock current)
    {
        _storage = storage;
        Current = current;
    }

    public Superblock Current { get; private set; }

    /// <summary>Loads the newest valid slot. Null when neither slot holds a superblock (a new device).</summary>
    public static Superblock? Load(IPoolStorage storage, out string? problem)
    {
        using var buf = new AlignedBuffer(2 * PoolLayout.BlockSize);
        storage.Read(0, buf.Span);
        var a = Superblock.TryDecode(buf.Span[..PoolLayout.BlockSize], out var pa);
        var b = Superblock.TryDecode(buf.Span[PoolLayout.BlockSize..], out var pb);
        problem = a == null && b == null ? $"slot A: {pa}; slot B: {pb}" : null;
        if (a == null)
        {
            return b;
        }
        if (b == null)
        {
            return a;
        }
        return a.Generation >= b.Generation ? a : b;
    }

    /// <summary>
    /// Applies <paramref name="change"/> to a copy, bumps the generation and writes the other
    /// slot, synced; only then does the copy become <see cref="Current"/>. If the write or sync
    /// fails, Current stays what the disk is known to hold (replay start, checkpoint segments),
    /// so the cleaner never reuses what the old replay chain still needs.
    /// </summary>
    public void Update(Action<Superblock> change)
    {
        lock (_lock)
        {
            var next = Current.Copy();
            change(next);
            next.Generation++;
            next.Encode(_buffer.Span);
            _storage.Write((long)(next.Generation % 2) * PoolLayout.BlockSize, _buffer.Span);
            _storage.Sync();
            Current = next;
        }
    }

    public void Dispose() => ((IDisposable)_buffer).Dispose();
}
