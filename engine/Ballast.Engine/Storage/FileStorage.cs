using System.Runtime.InteropServices;
using Ballast.Engine.Interop;

namespace Ballast.Engine.Storage;

/// <summary>
/// A pool file (or block device) opened with O_DIRECT: the page cache would only add a copy and
/// flatter benchmarks. Falls back to buffered I/O where the filesystem refuses O_DIRECT (tmpfs).
/// An exclusive flock stops a second daemon from opening the same pool.
/// </summary>
public sealed unsafe class FileStorage : IPoolStorage
{
    private readonly int _fd;
    private readonly IoWorkers _workers;
    private readonly UringReads? _uring;
    private long _length;
    private int _disposed;

    private FileStorage(int fd, string path, long length, bool direct, int readThreads, bool useIoUring)
    {
        _fd = fd;
        _length = length;
        IsDirect = direct;
        Description = path;
        _workers = new IoWorkers(readThreads, "pool");
        if (useIoUring)
        {
            _uring = UringReads.TryCreate(fd, UringDepth, FinishShortRead, out var why);
            ReadPath = _uring != null ? $"io_uring ({UringDepth - 1} in flight, then {readThreads} threads)" : $"{readThreads} threads ({why})";
        }
        else
        {
            ReadPath = $"{readThreads} threads (io_uring off)";
        }
    }

    private const int UringDepth = 256;

    /// <summary>How reads are issued, for the log.</summary>
    public string ReadPath { get; }

    public string Description { get; }
    public bool IsDirect { get; }
    public long Length => Interlocked.Read(ref _length);

    /// <summary>Opens or creates the file at <paramref name="path"/>; grows it to at least <paramref name="minLength"/>.</summary>
    public static FileStorage Open(string path, long minLength, int readThreads = 32, bool useIoUring = true)
    {
        var flags = Libc.O_RDWR | Libc.O_CREAT | Libc.O_CLOEXEC;
        var direct = true;
        var fd = Libc.Open(path, flags | Libc.O_DIRECT, 0x180 /* 0600 */);
        if (fd < 0 && Marshal.GetLastPInvokeError() == Libc.EINVAL)
        {
            direct = false;
            fd = Libc.Open(path, flags, 0x180);
        }
        if (fd < 0)
        {
            throw new StorageException($"open {path}", Marshal.GetLastPInvokeError());
        }
        if (Libc.FLock(fd, Libc.LOCK_EX | Libc.LOCK_NB) != 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            Libc.Close(fd);
            throw new IOException($"pool file {path} is in use by another process (flock: {Libc.Describe(errno)})");
        }
        var length = new FileInfo(path).Length;
        if (length < minLength)
        {
            if (Libc.FTruncate(fd, minLength) != 0)
            {
                var errno = Marshal.GetLastPInvokeError();
                Libc.Close(fd);
                throw new StorageException($"ftruncate {path}", errno);
            }
            length = minLength;
        }
        return new FileStorage(fd, path, length, direct, readThreads, useIoUring);
    }

    public ValueTask ReadAsync(long offset, Memory<byte> buffer, bool completeInline = false)
        => _uring?.TryRead(offset, buffer, completeInline) ?? _workers.ReadAsync(this, offset, buffer, completeInline);

    private void FinishShortRead(long offset, Memory<byte> rest) => Read(offset, rest.Span);

    public void Read(long offset, Span<byte> buffer)
    {
        fixed (byte* p = buffer)
        {
            var done = 0;
            while (done < buffer.Length)
            {
                var n = Libc.PRead(_fd, p + done, (nuint)(buffer.Length - done), offset + done);
                if (n < 0)
                {
                    var errno = Marshal.GetLastPInvokeError();
                    if (errno == Libc.EINTR)
                    {
                        continue;
                    }
                    throw new StorageException("read", errno, offset + done);
                }
                if (n == 0)
                {
                    // Beyond the end of a sparse file that was never extended: reads as zeroes.
                    buffer[done..].Clear();
                    return;
                }
                done += (int)n;
            }
        }
    }

    public void Write(long offset, ReadOnlySpan<byte> buffer)
    {
        fixed (byte* p = buffer)
        {
            var done = 0;
            while (done < buffer.Length)
            {
                var n = Libc.PWrite(_fd, p + done, (nuint)(buffer.Length - done), offset + done);
                if (n < 0)
                {
                    var errno = Marshal.GetLastPInvokeError();
                    if (errno == Libc.EINTR)
                    {
                        continue;
                    }
                    throw new StorageException("write", errno, offset + done);
                }
                if (n == 0)
                {
                    // Not seen on files; looping would spin for ever.
                    throw new StorageException("write", Libc.EIO, offset + done);
                }
                done += (int)n;
            }
        }
    }

    public void WriteGather(long offset, ReadOnlySpan<ReadOnlyMemory<byte>> parts)
    {
        if (parts.Length > Libc.IovMax)
        {
            throw new ArgumentException($"{parts.Length} parts in one write (at most {Libc.IovMax})", nameof(parts));
        }
        var iov = stackalloc Libc.IoVec[parts.Length];
        // Every part is pinned for the call (native aligned buffers pin for free).
        var handles = System.Buffers.ArrayPool<System.Buffers.MemoryHandle>.Shared.Rent(parts.Length);
        try
        {
            long total = 0;
            for (var i = 0; i < parts.Length; i++)
            {
                handles[i] = parts[i].Pin();
                iov[i] = new Libc.IoVec { Base = handles[i].Pointer, Length = (nuint)parts[i].Length };
                total += parts[i].Length;
            }
            long n;
            do
            {
                n = PWriteVCall(_fd, iov, parts.Length, offset);
            }
            while (n < 0 && Marshal.GetLastPInvokeError() == Libc.EINTR);
            if (n < 0)
            {
                throw new StorageException("write", Marshal.GetLastPInvokeError(), offset);
            }
            // A short write (rare with O_DIRECT): the rest goes part by part.
            long skip = n;
            for (var i = 0; i < parts.Length && n < total; i++)
            {
                if (skip >= parts[i].Length)
                {
                    skip -= parts[i].Length;
                    continue;
                }
                Write(offset + n, parts[i].Span[(int)skip..]);
                n += parts[i].Length - skip;
                skip = 0;
            }
        }
        finally
        {
            for (var i = 0; i < parts.Length; i++)
            {
                handles[i].Dispose();
            }
            System.Buffers.ArrayPool<System.Buffers.MemoryHandle>.Shared.Return(handles, clearArray: true);
        }
    }

    internal delegate long PWriteVFunc(int fd, Libc.IoVec* iov, int count, long offset);

    /// <summary>pwritev; tests replace it to make it write short, which a regular file never does on its own.</summary>
    internal PWriteVFunc PWriteVCall { get; set; } = static (fd, iov, count, offset) => Libc.PWriteV(fd, iov, count, offset);

    // Linux reports a writeback error to one fdatasync per open file, and the appender (data
    // written into holes), the syncer and checkpoints all sync this one fd: syncs run one at a
    // time, and once one fails every later one fails too, so no caller takes a later success
    // for durability of pages that were lost.
    private readonly object _syncLock = new();
    private int _syncErrno;

    /// <summary>fdatasync, returning 0 or the errno; tests replace it to fail a sync the way a lost writeback does.</summary>
    internal Func<int, int> SyncCall { get; set; } = fd => Libc.FDataSync(fd) == 0 ? 0 : Marshal.GetLastPInvokeError();

    public void Sync()
    {
        lock (_syncLock)
        {
            if (_syncErrno != 0)
            {
                throw new StorageException("fdatasync (an earlier one failed; the pool must be reopened)", _syncErrno);
            }
            var errno = SyncCall(_fd);
            if (errno != 0)
            {
                _syncErrno = errno;
                throw new StorageException("fdatasync", _syncErrno);
            }
        }
    }

    public void Allocate(long offset, long length)
    {
        if (Libc.FAllocate(_fd, Libc.FALLOC_FL_KEEP_SIZE, offset, length) != 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            if (errno != Libc.EOPNOTSUPP)
            {
                throw new StorageException("fallocate", errno, offset);
            }
        }
    }

    // Zeroes for preparing space (O_DIRECT needs an aligned source); made on first use.
    private Buffers.AlignedBuffer? _zeroes;
    private const int ZeroChunk = 1 << 20;
    // Cleared when the filesystem or device has no FALLOC_FL_WRITE_ZEROES; zeroes are written then.
    private bool _writeZeroesOffload = true;

    public bool BenefitsFromPreparing => IsDirect && FileSystemMagic() is Libc.EXT4_SUPER_MAGIC or Libc.XFS_SUPER_MAGIC;

    private long FileSystemMagic()
    {
        // struct statfs is 120 bytes on 64-bit Linux; room to spare.
        var buf = stackalloc byte[256];
        return Libc.FStatFs(_fd, buf) == 0 ? *(long*)buf : 0;
    }

    public long FirstUnwritten(long offset, long length)
    {
        // SEEK_HOLE reports unwritten extents as holes on ext4 and xfs (iomap); filesystems
        // without holes and block devices report the end of the file, i.e. nothing to prepare.
        var hole = Libc.LSeek(_fd, offset, Libc.SEEK_HOLE);
        if (hole < 0)
        {
            return Marshal.GetLastPInvokeError() == Libc.ENXIO ? offset : -1;
        }
        return hole < offset + length ? hole : -1;
    }

    public long ZeroUnwritten(long offset, long length)
    {
        var end = offset + length;
        var pos = offset;
        long zeroed = 0;
        while (pos < end)
        {
            var hole = FirstUnwritten(pos, end - pos);
            if (hole < 0)
            {
                break;
            }
            var data = Libc.LSeek(_fd, hole, Libc.SEEK_DATA);
            var stop = data < 0 ? end : Math.Min(end, data);
            // Keep the O_DIRECT alignment whatever block size the filesystem reports in.
            var from = hole & ~(long)(Log.PoolLayout.BlockSize - 1);
            var to = Math.Min(end, (stop + Log.PoolLayout.BlockSize - 1) & ~(long)(Log.PoolLayout.BlockSize - 1));
            if (to <= from)
            {
                to = Math.Min(end, from + Log.PoolLayout.BlockSize);
            }
            ZeroRange(from, to - from);
            zeroed += to - from;
            pos = to;
        }
        return zeroed;
    }

    private void ZeroRange(long offset, long length)
    {
        if (Volatile.Read(ref _writeZeroesOffload))
        {
            if (Libc.FAllocate(_fd, Libc.FALLOC_FL_WRITE_ZEROES, offset, length) == 0)
            {
                return;
            }
            var errno = Marshal.GetLastPInvokeError();
            if (errno is not (Libc.EOPNOTSUPP or Libc.EINVAL))
            {
                throw new StorageException("fallocate (write zeroes)", errno, offset);
            }
            Volatile.Write(ref _writeZeroesOffload, false);
        }
        // Space first, so a full filesystem fails here rather than halfway through the writes.
        Allocate(offset, length);
        _zeroes ??= new Buffers.AlignedBuffer(ZeroChunk);
        for (long done = 0; done < length; done += ZeroChunk)
        {
            Write(offset + done, _zeroes.Span[..(int)Math.Min(ZeroChunk, length - done)]);
        }
    }

    public void Discard(long offset, long length)
    {
        if (Libc.FAllocate(_fd, Libc.FALLOC_FL_PUNCH_HOLE | Libc.FALLOC_FL_KEEP_SIZE, offset, length) != 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            if (errno != Libc.EOPNOTSUPP)
            {
                throw new StorageException("punch hole", errno, offset);
            }
        }
    }

    public void Grow(long length)
    {
        if (length <= Length)
        {
            return;
        }
        if (Libc.FTruncate(_fd, length) != 0)
        {
            throw new StorageException("ftruncate", Marshal.GetLastPInvokeError());
        }
        Interlocked.Exchange(ref _length, length);
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            _uring?.Dispose();
            _workers.Dispose();
            ((IDisposable?)_zeroes)?.Dispose();
            Libc.Close(_fd);
        }
    }
}
