using System.Buffers;
using System.Runtime.InteropServices;
using Ballast.Engine.Async;
using Ballast.Engine.Interop;

namespace Ballast.Engine.Storage;

/// <summary>
/// Pool reads through io_uring: the submitting thread queues a read with one io_uring_enter, and
/// one completion thread waits for any number of them at once and completes them (inline for
/// callers that ask, as one <see cref="CompletionBatch"/>). With a blocking pread per thread a
/// read cost a wake-up of an I/O thread, a sleep in the kernel and another wake-up; here 32 reads
/// in flight cost one wake-up per batch of completions. A read asked for inside a
/// <see cref="CompletionBatch"/> (the NBD receive loop starting the requests one socket read
/// brought) is only put in the ring; the kernel hears of all of them in one io_uring_enter when
/// the batch ends. Absent io_uring (old kernel, a seccomp
/// filter that refuses it) <see cref="TryCreate"/> says why and the caller keeps its threads.
/// </summary>
internal sealed unsafe class UringReads : IDisposable
{
    private const ulong StopTag = ulong.MaxValue;

    private readonly int _ringFd;
    private readonly int _fd;
    private readonly nint _ring;
    private readonly nuint _ringBytes;
    private readonly nint _sqes;
    private readonly nuint _sqesBytes;
    private readonly uint* _sqTail;
    private readonly uint _sqMask;
    private readonly uint* _sqArray;
    private readonly uint* _cqHead;
    private readonly uint* _cqTail;
    private readonly uint _cqMask;
    private readonly byte* _cqes;
    private readonly object _lock = new();
    private readonly ReadOp[] _ops;
    private readonly Stack<int> _free;
    private readonly Thread _reaper;
    private readonly Action<long, Memory<byte>> _finishShort;
    private int _inFlight;
    // Reads in the submission ring the kernel has not been told about yet (deferred to a batch's
    // end), oldest first; -1 stands for the stop request.
    private readonly List<int> _queued = [];
    private readonly SubmitAtBatchEnd _submitAtBatchEnd;
    private bool _stopping;
    private bool _broken;
    private bool _releaseOnExit;

    private UringReads(int ringFd, int fd, nint ring, nuint ringBytes, nint sqes, nuint sqesBytes, byte* p, int depth, Action<long, Memory<byte>> finishShort)
    {
        _ringFd = ringFd;
        _fd = fd;
        _ring = ring;
        _ringBytes = ringBytes;
        _sqes = sqes;
        _sqesBytes = sqesBytes;
        var r = (byte*)ring;
        _sqTail = (uint*)(r + *(uint*)(p + IoUring.SqTail));
        _sqMask = *(uint*)(r + *(uint*)(p + IoUring.SqRingMask));
        _sqArray = (uint*)(r + *(uint*)(p + IoUring.SqArray));
        _cqHead = (uint*)(r + *(uint*)(p + IoUring.CqHead));
        _cqTail = (uint*)(r + *(uint*)(p + IoUring.CqTail));
        _cqMask = *(uint*)(r + *(uint*)(p + IoUring.CqRingMask));
        _cqes = r + *(uint*)(p + IoUring.CqCqes);
        _finishShort = finishShort;
        _submitAtBatchEnd = new SubmitAtBatchEnd(this);
        // One slot fewer than the ring: the stop request always has room.
        _ops = new ReadOp[depth - 1];
        _free = new Stack<int>(_ops.Length);
        for (var i = _ops.Length - 1; i >= 0; i--)
        {
            _ops[i] = new ReadOp(this, i);
            _free.Push(i);
        }
        _reaper = new Thread(Reap) { IsBackground = true, Name = "pool-uring" };
        _reaper.Start();
    }

    /// <summary>A ring of <paramref name="depth"/> (a power of two) reads on <paramref name="fd"/>, or null and why not.</summary>
    /// <param name="finishShort">Reads the rest of a short read synchronously (it does not happen on a pool file, but is handled).</param>
    public static UringReads? TryCreate(int fd, int depth, Action<long, Memory<byte>> finishShort, out string? why)
    {
        var p = stackalloc byte[IoUring.ParamsSize];
        new Span<byte>(p, IoUring.ParamsSize).Clear();
        var ringFd = IoUring.Setup((uint)depth, p);
        if (ringFd < 0)
        {
            why = $"io_uring_setup: {Libc.Describe(Marshal.GetLastPInvokeError())}";
            return null;
        }
        if ((*(uint*)(p + IoUring.PFeatures) & IoUring.FeatSingleMmap) == 0 || *(uint*)(p + IoUring.PSqEntries) != (uint)depth)
        {
            Libc.Close(ringFd);
            why = "io_uring lacks IORING_FEAT_SINGLE_MMAP (kernel older than 5.4)";
            return null;
        }
        var sqBytes = *(uint*)(p + IoUring.SqArray) + (uint)depth * 4;
        var cqBytes = *(uint*)(p + IoUring.CqCqes) + *(uint*)(p + IoUring.PCqEntries) * IoUring.CqeSize;
        var ringBytes = (nuint)Math.Max(sqBytes, cqBytes);
        var ring = IoUring.Mmap(0, ringBytes, IoUring.ProtRead | IoUring.ProtWrite, IoUring.MapShared | IoUring.MapPopulate, ringFd, IoUring.OffSqRing);
        var sqesBytes = (nuint)(depth * IoUring.SqeSize);
        var sqes = ring == -1 ? -1 : IoUring.Mmap(0, sqesBytes, IoUring.ProtRead | IoUring.ProtWrite, IoUring.MapShared | IoUring.MapPopulate, ringFd, IoUring.OffSqes);
        if (ring == -1 || sqes == -1)
        {
            why = $"io_uring mmap: {Libc.Describe(Marshal.GetLastPInvokeError())}";
            if (ring != -1)
            {
                IoUring.Munmap(ring, ringBytes);
            }
            Libc.Close(ringFd);
            return null;
        }
        why = null;
        return new UringReads(ringFd, fd, ring, ringBytes, sqes, sqesBytes, p, depth, finishShort);
    }

    /// <summary>Queues a read; null when every slot is busy (the caller reads another way).</summary>
    public ValueTask? TryRead(long offset, Memory<byte> buffer, bool completeInline)
    {
        lock (_lock)
        {
            if (_stopping || _broken || _free.Count == 0)
            {
                return null;
            }
            var op = _ops[_free.Pop()];
            op.Start(offset, buffer, completeInline);
            _inFlight++;
            // If this throws the ring is broken: the slot and its pin are left as they are, since
            // the kernel may still see the entry.
            Queue(IoUring.OpRead, offset, (ulong)op.Address, (uint)buffer.Length, (ulong)op.Index);
            // Only callers that promise a short continuation (inline) are deferred: they do not
            // block on the read inside their batch, which would wait for ever. Each deferral is
            // registered with its own thread's batch, so no read waits for another thread's.
            if (!(completeInline && CompletionBatch.TryDefer(_submitAtBatchEnd)))
            {
                SubmitQueued();
            }
            return new ValueTask(op, op.Version);
        }
    }

    /// <summary>Puts one request in the submission ring; <see cref="SubmitQueued"/> hands it to the kernel. Caller holds the lock.</summary>
    private void Queue(byte opcode, long offset, ulong address, uint length, ulong tag)
    {
        var tail = *_sqTail;
        var index = tail & _sqMask;
        var sqe = (byte*)_sqes + index * IoUring.SqeSize;
        new Span<byte>(sqe, IoUring.SqeSize).Clear();
        sqe[IoUring.SqeOpcode] = opcode;
        *(int*)(sqe + IoUring.SqeFd) = opcode == IoUring.OpNop ? -1 : _fd;
        *(long*)(sqe + IoUring.SqeOff) = offset;
        *(ulong*)(sqe + IoUring.SqeAddr) = address;
        *(uint*)(sqe + IoUring.SqeLen) = length;
        *(ulong*)(sqe + IoUring.SqeUserData) = tag;
        _sqArray[index] = index;
        // The kernel reads the entry after it sees the new tail (x86 keeps stores in order; the
        // volatile write keeps the compiler from moving it).
        Volatile.Write(ref *_sqTail, tail + 1);
        _queued.Add(tag == StopTag ? -1 : (int)tag);
    }

    /// <summary>Hands every queued entry to the kernel. Caller holds the lock.</summary>
    private void SubmitQueued()
    {
        var idle = 0;
        while (_queued.Count > 0)
        {
            var n = IoUring.Enter(_ringFd, (uint)_queued.Count, 0, 0);
            if (n > 0)
            {
                // The kernel takes the oldest entries first; what it did not take is entered again.
                _queued.RemoveRange(0, Math.Min(n, _queued.Count));
                idle = 0;
                continue;
            }
            // Nothing taken (it should not happen: the entries are there) counts as a failure
            // after a while rather than spinning under the lock for ever.
            var errno = n == 0 ? (++idle < 1000 ? Libc.EAGAIN : Libc.EIO) : Marshal.GetLastPInvokeError();
            if (errno is not (Libc.EINTR or Libc.EAGAIN or Libc.EBUSY))
            {
                // A bad descriptor or argument: a bug, not a condition to wait out. The entries
                // may stay in the ring, so the ring takes no more reads (callers fall back), and
                // the reads not handed over fail now: their slots and pins stay as they are, and
                // a late completion of one is ignored.
                _broken = true;
                var error = new StorageException("io_uring_enter (submit)", errno);
                foreach (var index in _queued)
                {
                    if (index >= 0)
                    {
                        _ops[index].Abandon(error);
                    }
                }
                _queued.Clear();
                throw error;
            }
            // Interrupted, or the kernel is short of memory (EAGAIN) or completions (EBUSY; the
            // in-flight bound should prevent it): the entry is still in the ring; try again.
            if (errno != Libc.EINTR)
            {
                Thread.Sleep(1);
            }
        }
    }

    private void Reap()
    {
        var done = new List<(int Index, int Result)>(_ops.Length);
        var stop = false;
        while (true)
        {
            var n = IoUring.Enter(_ringFd, 0, 1, IoUring.EnterGetEvents);
            if (n < 0 && Marshal.GetLastPInvokeError() is not (Libc.EINTR or Libc.EAGAIN or Libc.EBUSY))
            {
                // Cannot wait (the ring is broken): poll so that completions still arrive.
                Thread.Sleep(1);
            }
            var head = *_cqHead;
            var tail = Volatile.Read(ref *_cqTail);
            while (head != tail)
            {
                var cqe = _cqes + (head & _cqMask) * IoUring.CqeSize;
                var tag = *(ulong*)(cqe + IoUring.CqeUserData);
                var res = *(int*)(cqe + IoUring.CqeRes);
                head++;
                if (tag == StopTag)
                {
                    stop = true;
                }
                else if (tag < (ulong)_ops.Length)
                {
                    done.Add(((int)tag, res));
                }
            }
            Volatile.Write(ref *_cqHead, head);
            if (done.Count > 0)
            {
                using (CompletionBatch.Begin())
                {
                    foreach (var (index, result) in done)
                    {
                        _ops[index].Finish(result);
                    }
                }
                lock (_lock)
                {
                    _inFlight -= done.Count;
                }
                done.Clear();
            }
            if (stop)
            {
                lock (_lock)
                {
                    if (_inFlight == 0)
                    {
                        if (_releaseOnExit)
                        {
                            Release();
                        }
                        return;
                    }
                }
            }
        }
    }

    private void Recycle(int index)
    {
        lock (_lock)
        {
            _free.Push(index);
        }
    }

    public void Dispose()
    {
        lock (_lock)
        {
            if (_stopping)
            {
                return;
            }
            _stopping = true;
            if (!_broken)
            {
                Queue(IoUring.OpNop, 0, 0, 0, StopTag);
                SubmitQueued();
            }
        }
        if (Thread.CurrentThread == _reaper)
        {
            // Disposed by a continuation running on the completion thread: it releases the ring
            // when its loop ends (joining itself would hang).
            _releaseOnExit = true;
            return;
        }
        if (!_reaper.Join(TimeSpan.FromSeconds(10)))
        {
            // A broken ring can leave the completion thread waiting: leave the mappings to the process.
            return;
        }
        Release();
    }

    private void Release()
    {
        IoUring.Munmap(_sqes, _sqesBytes);
        IoUring.Munmap(_ring, _ringBytes);
        Libc.Close(_ringFd);
    }

    /// <summary>Told when a batch that deferred reads ends: submits them (and any other thread's, harmlessly early).</summary>
    private sealed class SubmitAtBatchEnd(UringReads owner) : ICompletionBatchListener
    {
        public void OnBatchCompleted()
        {
            lock (owner._lock)
            {
                try
                {
                    owner.SubmitQueued();
                }
                catch (StorageException)
                {
                    // The reads it could not hand over have failed: their callers know.
                }
            }
        }
    }

    /// <summary>One read in flight: its buffer stays pinned until the kernel has finished with it.</summary>
    private sealed class ReadOp(UringReads owner, int index) : PooledRead
    {
        private MemoryHandle _pin;

        public int Index => index;
        public nint Address;

        public void Start(long offset, Memory<byte> buffer, bool completeInline)
        {
            Prepare(offset, buffer, completeInline);
            _end = 0;
            _pin = buffer.Pin();
            Address = (nint)_pin.Pointer;
        }

        // 0 in flight, 1 finished by its completion, 2 abandoned: whichever comes first completes it.
        private int _end;

        /// <summary>Fails a read the kernel may or may not have seen (on the thread pool: the caller holds the ring's lock); the slot is never reused.</summary>
        public void Abandon(Exception e)
        {
            if (Interlocked.CompareExchange(ref _end, 2, 0) == 0)
            {
                ThreadPool.UnsafeQueueUserWorkItem(_ => Fail(e), null);
            }
        }

        public void Finish(int result)
        {
            if (Interlocked.CompareExchange(ref _end, 1, 0) != 0)
            {
                return;
            }
            _pin.Dispose();
            _pin = default;
            try
            {
                if (result < 0)
                {
                    throw new StorageException($"read at {Offset}", -result);
                }
                if (result < Buffer.Length)
                {
                    owner._finishShort(Offset + result, Buffer[result..]);
                }
                Succeed();
            }
            catch (Exception e)
            {
                Fail(e);
            }
        }

        protected override void Recycle()
        {
            // An abandoned read's entry may still be in the kernel's hands: its slot stays out.
            if (Volatile.Read(ref _end) != 2)
            {
                owner.Recycle(index);
            }
        }
    }
}
