using Ballast.Engine.Interop;
using Ballast.Engine.Storage;

namespace Ballast.Engine.Tests.FaultInjection;

/// <summary>How a simulated crash treats writes that were not yet synced.</summary>
public enum CrashMode
{
    /// <summary>A prefix of the unsynced writes survives, the next one is torn, the rest are lost (a disk that persists in order).</summary>
    Prefix,
    /// <summary>Any subset survives, any survivor may be torn (a disk with a volatile cache that reorders).</summary>
    Subset,
}

/// <summary>
/// An in-memory device in the spirit of SQLite's crash VFS and RocksDB's fault-injection env:
/// writes stay volatile until Sync; a crash keeps only what a real disk might have kept; EIO and
/// ENOSPC can be injected on write, sync and allocate; bytes can be corrupted at rest.
/// </summary>
public sealed class FaultStorage : IPoolStorage
{
    private const int Block = 4096;
    private readonly object _lock = new();
    private readonly Dictionary<long, byte[]> _durable;
    private readonly List<(long Offset, byte[] Data)> _pending = [];
    private long _length;
    private long _ops;

    public FaultStorage() : this([], 0) { }

    // Blocks ever written (a file's written extents): what preparation looks for.
    private readonly HashSet<long> _written;

    private FaultStorage(Dictionary<long, byte[]> durable, long length)
    {
        _durable = durable;
        _length = length;
        _written = [.. durable.Keys];
    }

    /// <summary>Blocks zeroed by <see cref="ZeroUnwritten"/>.</summary>
    public long ZeroedBlocks { get; private set; }

    public string Description => "fault-injecting memory device";
    public long Length => Interlocked.Read(ref _length);
    public bool Crashed { get; private set; }
    public long Writes { get; private set; }
    public long Syncs { get; private set; }

    /// <summary>Crash when the write/sync operation count reaches this number (the op is not performed).</summary>
    public long CrashAtOp { get; set; } = long.MaxValue;

    /// <summary>Next N writes fail with this errno.</summary>
    public int FailWrites { get; set; }
    public int FailSyncs { get; set; }
    /// <summary>Next N writes to the superblock slots (the first two blocks) fail.</summary>
    public int FailSuperblockWrites { get; set; }
    public int FailAllocates { get; set; }
    public int FaultErrno { get; set; } = Libc.EIO;

    /// <summary>Device blocks (4 KiB numbers) whose reads fail with <see cref="FaultErrno"/>, like a bad sector.</summary>
    public HashSet<long> UnreadableBlocks { get; } = [];

    /// <summary>The device block holding exactly <paramref name="content"/> (synced or not), or -1.</summary>
    public long FindBlock(ReadOnlySpan<byte> content)
    {
        lock (_lock)
        {
            foreach (var (block, data) in _durable)
            {
                if (data.AsSpan().SequenceEqual(content))
                {
                    return block;
                }
            }
            foreach (var (po, data) in _pending)
            {
                for (var o = 0; o + Block <= data.Length; o += Block)
                {
                    if (data.AsSpan(o, Block).SequenceEqual(content))
                    {
                        return (po + o) / Block;
                    }
                }
            }
            return -1;
        }
    }

    public event Action? OnCrash;

    public void Crash()
    {
        Action? handler;
        lock (_lock)
        {
            if (Crashed)
            {
                return;
            }
            Crashed = true;
            handler = OnCrash;
        }
        handler?.Invoke();
    }

    private void Tick()
    {
        // Called under the lock.
        if (Crashed)
        {
            throw new StorageException("device gone (simulated crash)", Libc.EIO);
        }
        if (++_ops >= CrashAtOp)
        {
            Crashed = true;
            ThreadPool.QueueUserWorkItem(_ => OnCrash?.Invoke());
            throw new StorageException("device gone (simulated crash)", Libc.EIO);
        }
    }

    /// <summary>
    /// When set, each asynchronous read first awaits this (tests that hold reads in flight, or
    /// fail one); the bytes are copied when it completes.
    /// </summary>
    public Func<long, Memory<byte>, Task>? ReadGate { get; set; }

    public ValueTask ReadAsync(long offset, Memory<byte> buffer, bool completeInline = false)
    {
        if (ReadGate is { } gate)
        {
            return GatedReadAsync(gate, offset, buffer);
        }
        try
        {
            Read(offset, buffer.Span);
            return ValueTask.CompletedTask;
        }
        catch (Exception e)
        {
            return ValueTask.FromException(e);
        }
    }

    private async ValueTask GatedReadAsync(Func<long, Memory<byte>, Task> gate, long offset, Memory<byte> buffer)
    {
        await gate(offset, buffer).ConfigureAwait(false);
        Read(offset, buffer.Span);
    }

    public void Read(long offset, Span<byte> buffer)
    {
        CheckAligned(offset, buffer.Length);
        lock (_lock)
        {
            if (Crashed)
            {
                throw new StorageException("device gone (simulated crash)", Libc.EIO);
            }
            for (var o = 0; o < buffer.Length; o += Block)
            {
                if (UnreadableBlocks.Contains((offset + o) / Block))
                {
                    throw new StorageException("read", FaultErrno, offset + o);
                }
                var dst = buffer.Slice(o, Block);
                if (_durable.TryGetValue((offset + o) / Block, out var b))
                {
                    b.CopyTo(dst);
                }
                else
                {
                    dst.Clear();
                }
            }
            foreach (var (po, data) in _pending)
            {
                Overlay(offset, buffer, po, data);
            }
        }
    }

    private static void Overlay(long offset, Span<byte> buffer, long po, byte[] data)
    {
        var from = Math.Max(offset, po);
        var to = Math.Min(offset + buffer.Length, po + data.Length);
        if (from < to)
        {
            data.AsSpan((int)(from - po), (int)(to - from)).CopyTo(buffer[(int)(from - offset)..]);
        }
    }

    /// <summary>Called at the start of every write, outside the lock (tests hold the log's writer here).</summary>
    public Action<long>? BeforeWrite { get; set; }

    public void Write(long offset, ReadOnlySpan<byte> buffer)
    {
        CheckAligned(offset, buffer.Length);
        BeforeWrite?.Invoke(offset);
        lock (_lock)
        {
            Tick();
            if (FailWrites > 0 || (FailSuperblockWrites > 0 && offset < 2 * Block))
            {
                if (FailWrites > 0)
                {
                    FailWrites--;
                }
                else
                {
                    FailSuperblockWrites--;
                }
                throw new StorageException("write", FaultErrno, offset);
            }
            _pending.Add((offset, buffer.ToArray()));
            Writes++;
            for (var k = offset / Block; k < (offset + buffer.Length) / Block; k++)
            {
                _written.Add(k);
            }
        }
    }

    public long FirstUnwritten(long offset, long length)
    {
        lock (_lock)
        {
            for (var k = offset / Block; k < (offset + length) / Block; k++)
            {
                if (!_written.Contains(k))
                {
                    return k * Block;
                }
            }
            return -1;
        }
    }

    public bool BenefitsFromPreparing => true;

    /// <summary>
    /// Preparation overwrites the whole range with garbage, used blocks too: stronger than the
    /// real thing (which only writes where nothing was), to check that a free segment holds
    /// nothing recovery or a reader still needs.
    /// </summary>
    public bool ScribbleWhenZeroing { get; set; }

    /// <summary>Blocks that had been written before and were scribbled over by preparation.</summary>
    public long ScribbledUsedBlocks { get; private set; }

    public long ZeroUnwritten(long offset, long length)
    {
        // Through Write, so zeroes are volatile until a sync and a crash may drop or tear them.
        var zero = new byte[Block];
        var garbage = new byte[Block];
        long zeroed = 0;
        for (var o = offset; o < offset + length; o += Block)
        {
            var unwritten = FirstUnwritten(o, Block) >= 0;
            if (unwritten || ScribbleWhenZeroing)
            {
                if (ScribbleWhenZeroing)
                {
                    Random.Shared.NextBytes(garbage);
                }
                Write(o, ScribbleWhenZeroing ? garbage : zero);
                zeroed += Block;
                lock (_lock)
                {
                    ZeroedBlocks++;
                    ScribbledUsedBlocks += unwritten ? 0 : 1;
                }
            }
        }
        return zeroed;
    }

    public void Sync()
    {
        lock (_lock)
        {
            Tick();
            if (FailSyncs > 0)
            {
                FailSyncs--;
                // Like Linux after a failed fsync: the dirty data may or may not be on disk; drop it.
                _pending.Clear();
                throw new StorageException("fdatasync", FaultErrno);
            }
            foreach (var (o, d) in _pending)
            {
                Apply(_durable, o, d);
            }
            _pending.Clear();
            Syncs++;
        }
    }

    private static void Apply(Dictionary<long, byte[]> image, long offset, ReadOnlySpan<byte> data)
    {
        for (var o = 0; o < data.Length; o += Block)
        {
            var key = (offset + o) / Block;
            var n = Math.Min(Block, data.Length - o);
            if (!image.TryGetValue(key, out var b))
            {
                b = new byte[Block];
                image[key] = b;
            }
            data.Slice(o, n).CopyTo(b);
        }
    }

    public void Allocate(long offset, long length)
    {
        lock (_lock)
        {
            if (Crashed)
            {
                throw new StorageException("device gone (simulated crash)", Libc.EIO);
            }
            if (FailAllocates > 0)
            {
                FailAllocates--;
                throw new StorageException("fallocate", Libc.ENOSPC, offset);
            }
        }
    }

    public void Discard(long offset, long length)
    {
        lock (_lock)
        {
            if (Crashed)
            {
                throw new StorageException("device gone (simulated crash)", Libc.EIO);
            }
            for (var k = offset / Block; k < (offset + length) / Block; k++)
            {
                _durable.Remove(k);
                _written.Remove(k);
            }
        }
    }

    public void Grow(long length)
    {
        lock (_lock)
        {
            _length = Math.Max(_length, length);
        }
    }

    /// <summary>Flips bytes of the durable image (bit rot at rest).</summary>
    public void Corrupt(long offset, int length)
    {
        lock (_lock)
        {
            var buf = new byte[Block];
            for (var o = offset; o < offset + length; o++)
            {
                var key = o / Block;
                if (!_durable.TryGetValue(key, out var b))
                {
                    b = new byte[Block];
                    _durable[key] = b;
                }
                b[o % Block] ^= 0x5A;
            }
        }
    }

    /// <summary>The device as a power cut would leave it: durable data plus what the crash mode keeps of unsynced writes.</summary>
    public FaultStorage CrashImage(Random rng, CrashMode mode)
    {
        lock (_lock)
        {
            var image = new Dictionary<long, byte[]>(_durable.Count);
            foreach (var (k, v) in _durable)
            {
                image[k] = (byte[])v.Clone();
            }
            if (mode == CrashMode.Prefix)
            {
                var keep = rng.Next(_pending.Count + 1);
                for (var i = 0; i < keep; i++)
                {
                    Apply(image, _pending[i].Offset, _pending[i].Data);
                }
                if (keep < _pending.Count)
                {
                    var (o, d) = _pending[keep];
                    Apply(image, o, d.AsSpan(0, TearPoint(rng, d.Length)));
                }
            }
            else
            {
                foreach (var (o, d) in _pending)
                {
                    if (rng.Next(2) == 0)
                    {
                        continue;
                    }
                    Apply(image, o, rng.Next(4) == 0 ? d.AsSpan(0, TearPoint(rng, d.Length)) : d);
                }
            }
            return new FaultStorage(image, _length);
        }
    }

    /// <summary>A copy of the current durable state plus every pending write (a clean power-off after sync).</summary>
    public FaultStorage CleanImage()
    {
        lock (_lock)
        {
            var image = new Dictionary<long, byte[]>(_durable.Count);
            foreach (var (k, v) in _durable)
            {
                image[k] = (byte[])v.Clone();
            }
            foreach (var (o, d) in _pending)
            {
                Apply(image, o, d);
            }
            return new FaultStorage(image, _length);
        }
    }

    /// <summary>Where a torn write stops: a 512-byte or 4 KiB boundary inside it.</summary>
    private static int TearPoint(Random rng, int length)
    {
        var unit = rng.Next(2) == 0 ? 512 : 4096;
        var units = Math.Max(1, length / unit);
        return Math.Min(length, rng.Next(units) * unit);
    }

    private static void CheckAligned(long offset, int length)
    {
        if (offset % 4096 != 0 || length % 4096 != 0)
        {
            throw new ArgumentException($"unaligned I/O at {offset} length {length}");
        }
    }

    public void Dispose() { }
}
