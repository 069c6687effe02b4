using Ballast.Engine.Maps;
using Ballast.Engine.Storage;
using Ballast.Engine.Volumes;

namespace Ballast.Engine.Log;

/// <summary>
/// The one writer of the log, for all volumes (group commit). Submitters queue requests; the
/// appender thread takes everything queued, packs it into one batch, writes it with one pwrite,
/// applies the records to the maps in log order, completes them, and issues one fdatasync if any
/// request in the batch needs durability (FLUSH, FUA, metadata). Random client writes become
/// sequential appends, and a flush costs one sync per batch, not per request.
///
/// After a failed fdatasync the pool is poisoned: what reached the disk is unknown, so writes
/// fail until the pool is reopened and recovery establishes the truth (the lesson of fsyncgate).
/// A failed pwrite only fails its batch: the next batch is written at the same offset.
///
/// A small client write whose submitter has nothing else in flight (queue depth 1), and that
/// finds the log idle, is written by its own thread (<see cref="InlineMaxBytes"/>): waking the
/// appender thread costs more than the write. Deeper queues keep the appender thread, which
/// batches. A replica's receive loop queues the records of one socket read without waking the
/// appender and writes them itself when it has handled that read, if the log is idle then
/// (<see cref="AppendRequest.DrainAtBatchEnd"/>). <see cref="_busy"/> makes one thread at a
/// time the log's writer.
///
/// Such a lone write without FUA, submitted inside a completion batch (an NBD or iSCSI receive
/// loop; a replica's drain when it holds a single data record), is
/// acknowledged before its device write (<see cref="AckBeforeDeviceWrite"/>): its record is
/// built, applied and completed, and the device write runs when the submitter's batch ends,
/// after the reply has left. The client's next request then overlaps the device write instead of
/// following it. NBD and SCSI with WCE allow it: only FLUSH and FUA promise durability, and a
/// FLUSH waits for the log. Reads of those blocks meanwhile take them from the batch buffer
/// (<see cref="Pending"/>). If that device write fails, the acknowledged data is lost, so the
/// pool is poisoned: the next FLUSH fails, as it must, and reads of the blocks fail their checksum.
/// </summary>
internal sealed class Appender : IDisposable
{
    private readonly IPoolStorage _storage;
    private readonly PoolLayout _layout;
    private readonly SegmentTable _segments;
    private readonly SuperblockStore _superblock;
    private readonly Guid _poolId;
    private readonly BatchBuilder _builder;
    private readonly BatchBuilder _sealBuilder = new(PoolLayout.BlockSize);
    private readonly Buffers.AlignedBuffer _sealBuffer;
    private readonly IDisplacedSink _displaced;
    private readonly object _lock = new();
    private readonly Stack<AppendRequest> _pool = new();
    private readonly List<AppendRequest> _batchItems = [];
    // Requests completed only after the sync. Kept apart because a completed request may already
    // be recycled by its submitter: the appender must not look at it again.
    private readonly List<AppendRequest> _durableItems = [];
    private readonly Thread _thread;
    private List<AppendRequest> _queue = [];
    private List<AppendRequest> _taken = [];
    // Data writes waiting for the cleaner to free a segment, and everything with an LSN queued
    // behind them: log order must stay LSN order per volume, or replay would skip records.
    private readonly List<AppendRequest> _parked = [];
    private readonly List<AppendRequest> _work = [];
    private bool _parking;
    private bool _spaceFreed;
    private string? _failParked;
    private bool _splitAborted;
    // The head segment was opened while free segments were at or below DataReserve.
    private bool _headReserved;
    private readonly Syncer _syncer;
    private bool _stopping;
    // Someone is writing the log: the appender thread or a submitter writing its own request.
    private bool _busy;
    private List<AppendRequest> _inlineWork = [];
    // Under _lock: queued DrainAtBatchEnd records wait for the end of their submitter's batch
    // (see DrainDeferred); anyone else queueing meanwhile wakes the appender thread.
    private bool _drainDeferred;
    private readonly DrainKick _drainKick;
    private ulong _batchSeq;
    private Exception? _poison;
    // The lone write being processed may be acknowledged before its device write (see the class
    // comment); set by WriteBatch when it left that write to the end of the submitter's batch.
    private bool _ackEarly;
    private bool _writeDeferred;
    private int _deferredBatchOffset;
    private long _deferredBusyFrom;
    private long _deferredBatchesBefore;
    private readonly DeferredWriteKick _deferredKick;
    private volatile bool _refuseWrites;
    // Slack-space recycling: holes handed over by the cleaner, and this batch's data for them
    // (staged in one aligned buffer, written before the batch and made durable by its sync).
    private readonly Cleaning.RecycleHoles _holes = new();
    private readonly Buffers.AlignedBuffer _stage;
    private readonly List<(long Phys, int Offset, int Count)> _inPlace = [];
    private int _stageUsed;
    private bool _holesLowSignalled;
    private const int MaxStageBytes = 1 << 20;

    public Appender(IPoolStorage storage, PoolLayout layout, SegmentTable segments, SuperblockStore superblock, LogPosition position, int maxBatchPayloadBytes, IDisplacedSink displaced)
    {
        _storage = storage;
        _layout = layout;
        _segments = segments;
        _superblock = superblock;
        _poolId = superblock.Current.PoolId;
        _displaced = displaced;
        _builder = new BatchBuilder(maxBatchPayloadBytes);
        _sealBuffer = new Buffers.AlignedBuffer(layout.SealBytes);
        _stage = new Buffers.AlignedBuffer(MaxStageBytes);
        MaxBatchBlocks = maxBatchPayloadBytes >> PoolLayout.BlockShift;
        Segment = position.Segment;
        Seq = position.Seq;
        Offset = position.Offset;
        LastSeq = position.Seq;
        _thread = new Thread(Run) { IsBackground = true, Name = "ballast-appender" };
        _drainKick = new DrainKick(this);
        _deferredKick = new DeferredWriteKick(this);
        _syncer = new Syncer(storage);
    }

    public int MaxBatchBlocks { get; }
    public int Segment { get; private set; }
    public ulong Seq { get; private set; }
    public int Offset { get; private set; }
    public ulong LastSeq { get; set; }

    /// <summary>
    /// Largest client data record a submitter writes itself when the appender is idle (0: never).
    /// It blocks the submitting thread for one device write, so it stays small.
    /// </summary>
    public int InlineMaxBytes { get; set; }

    /// <summary>Batches written by a submitter's thread (diagnostics).</summary>
    public long InlineBatches;

    /// <summary>
    /// A lone write without FUA, submitted inside a completion batch, is acknowledged before its
    /// device write, which runs when that batch ends (see the class comment).
    /// </summary>
    public bool AckBeforeDeviceWrite { get; set; }

    /// <summary>Writes acknowledged before their device write (diagnostics).</summary>
    public long EarlyAcks;

    /// <summary>Client payload bytes written to the device from the client's buffer, without a copy into the batch (diagnostics).</summary>
    public long BorrowedBytes;

    /// <summary>The write acknowledged before its device write, while that write is in flight: readers overlay it.</summary>
    public PendingWrite Pending { get; } = new();

    /// <summary>Free segments that data writes may not take: kept for trims, metadata, the cleaner and checkpoints.</summary>
    public volatile int DataReserve = 2;

    /// <summary>Segments that trims, metadata and relocation leave free (for the checkpoint).</summary>
    public volatile int MinReserve = 1;

    public Exception? Poison => Volatile.Read(ref _poison) ?? _syncer.Failure;

    /// <summary>How long a data write may wait for the cleaner when no segment is free; zero fails at once.</summary>
    public TimeSpan SpaceWait { get; set; }

    /// <summary>Free segments at or below which the cleaner is woken.</summary>
    public volatile int CleanThreshold;

    /// <summary>Free segments at or below which client writes go into recycled holes while there are any (0: never).</summary>
    public volatile int RecycleBelow;

    /// <summary>Holes left below which the cleaner is woken to find more (while recycling).</summary>
    public int HolesLowMark { get; set; } = 2048;

    /// <summary>Recycled holes not yet used (read from other threads: an estimate).</summary>
    public long HolesRemaining => _holes.Remaining;

    /// <summary>The cleaner begins a mark (appender thread, at a batch boundary): holes taken from now on are left out of its next list.</summary>
    internal void BeginHoleMark() => _holes.BeginMark();

    /// <summary>Forgets the holes (appender thread, at a batch boundary): the cleaner may now pick their segments as victims.</summary>
    internal void ClearHoles() => _holes.Clear();

    /// <summary>Installs the cleaner's holes at a batch boundary (appender thread); returns the old list for reuse.</summary>
    internal List<(long Phys, int Count)> SwapHoles(List<(long Phys, int Count)> runs)
    {
        _holesLowSignalled = false;
        return _holes.Swap(runs);
    }

    public int ParkedCount
    {
        get
        {
            lock (_lock)
            {
                return _parked.Count;
            }
        }
    }

    /// <summary>Raised by the log's writer (appender thread or inline submitter) when free segments run low or a write is waiting for space.</summary>
    public event Action? SpaceLow;

    /// <summary>Segments were freed: retry parked writes.</summary>
    public void SpaceFreed()
    {
        lock (_lock)
        {
            _spaceFreed = true;
            Monitor.Pulse(_lock);
        }
    }

    /// <summary>The cleaner found nothing to reclaim: parked writes fail with ENOSPC now.</summary>
    public void FailParked(string reason)
    {
        lock (_lock)
        {
            if (_parked.Count > 0)
            {
                _failParked = reason;
                Monitor.Pulse(_lock);
            }
        }
    }

    /// <summary>Raised after each batch with the number of bytes it put on the device.</summary>
    public event Action<long>? Appended;

    // Statistics, updated only by the log's writer (the appender thread or an inline submitter, see _busy).
    public long DeviceBytes;
    public long ClientDataBlocks;
    public long RelocatedBlocks;
    /// <summary>Client blocks written into recycled holes.</summary>
    public long RecycledBlocks;
    /// <summary>Syncs of in-place data ahead of its batch.</summary>
    public long InPlaceSyncs;
    public long Batches;
    public long WriteTicks;
    /// <summary>Bytes left unused at the ends of sealed segments, and segments opened (diagnostics).</summary>
    public long SealedUnusedBytes;
    public long SegmentsOpened;
    public long SegmentsOpenedForClients;
    public long BusyTicks;

    /// <summary>Writes that had to wait for the cleaner (no segment free above the reserve). Written by the log's writer only.</summary>
    public long Parks;
    public long Syncs => _syncer.Syncs;
    public long SyncTicks => _syncer.SyncTicks;

    public void Start()
    {
        _syncer.Start();
        _thread.Start();
    }

    public AppendRequest Rent()
    {
        lock (_lock)
        {
            if (_pool.Count > 0)
            {
                var r = _pool.Pop();
                r.Reset();
                return r;
            }
        }
        var n = new AppendRequest(MaxBatchBlocks);
        n.Reset();
        return n;
    }

    public void Return(AppendRequest r)
    {
        r.Payload = default;
        r.Volume = null;
        r.Inline = null;
        r.Apply = null;
        r.State = null;
        lock (_lock)
        {
            if (_pool.Count < 4096)
            {
                _pool.Push(r);
            }
        }
    }

    /// <summary>Queues a request. Volume records get their LSN and epoch here, so LSN order is log order.</summary>
    public ValueTask SubmitAsync(AppendRequest r)
    {
        lock (_lock)
        {
            if (_stopping)
            {
                r.Fail(new BlockVolumeException(BlockError.Gone, "the pool is shutting down"));
                return new ValueTask(r, r.Version);
            }
            if (r.Op == AppendOp.Record && r.Volume != null)
            {
                var v = r.Volume;
                r.Desc.VolumeId = v.Id;
                if ((r.Desc.Flags & RecordFlags.IfNewer) != 0 || r.Desc.Kind is RecordKind.SnapshotCreate or RecordKind.VolumeResize or RecordKind.EpochSet)
                {
                    // Resync copies and metadata take no LSN of their own: a volume's LSNs are its
                    // data records', which replicas must number exactly as the primary did.
                    r.Desc.Lsn = v.NextLsn;
                }
                else if (r.ExplicitLsn > 0)
                {
                    r.Desc.Lsn = r.ExplicitLsn;
                    v.NextLsn = Math.Max(v.NextLsn, r.ExplicitLsn);
                }
                else
                {
                    r.Desc.Lsn = ++v.NextLsn;
                }
                r.Desc.Epoch = v.Epoch;
                if (v.Forwarder is { } f && r.ExplicitLsn == 0 && r.Desc.Kind is RecordKind.Data or RecordKind.Zero or RecordKind.Trim
                    && (r.Desc.Flags & (RecordFlags.Relocated | RecordFlags.IfNewer)) == 0)
                {
                    // Forwarded here, under the queue lock, so replicas see records in LSN order.
                    r.ReplicaWait = f.Forward(new Replication.ReplicatedRecord(r.Desc.Kind, r.Desc.Lsn, r.Desc.Epoch, r.Desc.Lba, r.Desc.BlockCount,
                        (r.Desc.Flags & RecordFlags.Fua) != 0), r.Payload, r.CompleteInline);
                }
            }
            if (!CanWriteInline(r))
            {
                _queue.Add(r);
                if (r.DrainAtBatchEnd && !_busy && Async.CompletionBatch.TryDefer(_drainKick))
                {
                    // Woken (or written here) when the submitter's batch ends, with the records
                    // it queues after this one: one wake-up, or none, for all of them.
                    _drainDeferred = true;
                }
                else if (_queue.Count == 1 || _drainDeferred)
                {
                    Monitor.Pulse(_lock);
                }
                return new ValueTask(r, r.Version);
            }
            _busy = true;
        }
        WriteInline(r);
        return new ValueTask(r, r.Version);
    }

    /// <summary>
    /// Under the lock: the log is idle, nothing is queued or parked, and r is a small plain client
    /// write whose submitter has nothing else in flight. For a replicated volume only if it will
    /// be acknowledged before its device write: the record forwarded to the replicas leaves when
    /// the submitter's batch ends, and the deferred device write follows it, beside the round
    /// trip; written here first, the local write would come before the round trip (+30 µs measured).
    /// </summary>
    private bool CanWriteInline(AppendRequest r) =>
        !_busy && _queue.Count == 0
        && r.Alone && r.Op == AppendOp.Record && r.Desc.Kind == RecordKind.Data
        && (r.Volume is { Forwarder: null } || r.Volume != null && WillAckEarly(r))
        && (r.Desc.Flags & (RecordFlags.Relocated | RecordFlags.IfNewer)) == 0
        && (long)r.Desc.BlockCount << PoolLayout.BlockShift <= InlineMaxBytes
        && PlainAppendFits(r.Desc.BlockCount + 1);

    /// <summary>
    /// Under the lock, nobody holding <see cref="_busy"/> (so the writer's state is stable): nothing
    /// is parked, and <paramref name="blocks"/> (payload and header) go into the open segment as a
    /// plain append. Near a full pool writes go into recycled holes (with an fdatasync of their
    /// own), and opening the next segment means fallocate and header writes; neither belongs on a
    /// socket thread that other connections share, so those are left to the appender thread.
    /// </summary>
    private bool PlainAppendFits(long blocks) =>
        _parked.Count == 0 && _failParked == null && !_headReserved && _segments.FreeCount > RecycleBelow
        && blocks << PoolLayout.BlockShift <= _layout.BatchLimit - Offset;

    /// <summary>
    /// The batch that deferred the wake-up of queued <see cref="AppendRequest.DrainAtBatchEnd"/>
    /// records ended, on the submitter's thread: writes the queue here if the log is idle and the
    /// work is a plain append that fits the open segment, else wakes the appender thread.
    /// </summary>
    private void DrainDeferred()
    {
        lock (_lock)
        {
            if (!_drainDeferred)
            {
                return;
            }
            _drainDeferred = false;
            if (_busy || _queue.Count == 0)
            {
                // The writer takes the queue when it finishes.
                return;
            }
            if (!CanDrainInline())
            {
                Monitor.Pulse(_lock);
                return;
            }
            (_queue, _inlineWork) = (_inlineWork, _queue);
            _busy = true;
        }
        // Called as the submitter's batch ends: a batch of its own sends the answers once, and a
        // lone record among them is answered before its device write, which follows the answers.
        var opened = Async.CompletionBatch.TryOpen();
        try
        {
            WriteInline(null);
        }
        finally
        {
            Async.CompletionBatch.End(ref opened);
        }
    }

    /// <summary>
    /// Under the lock, the log idle: the queue holds only flushes and plain data, zero and trim
    /// records that fit one batch in the open segment (<see cref="PlainAppendFits"/>).
    /// </summary>
    private bool CanDrainInline()
    {
        if (_stopping)
        {
            return false;
        }
        long blocks = 0;
        foreach (var q in _queue)
        {
            if (q.Op == AppendOp.Flush)
            {
                continue;
            }
            if (q.Op != AppendOp.Record || q.Desc.Kind is not (RecordKind.Data or RecordKind.Zero or RecordKind.Trim)
                || (q.Desc.Flags & (RecordFlags.Relocated | RecordFlags.IfNewer)) != 0 || q.Inline != null)
            {
                return false;
            }
            blocks += q.Desc.Kind == RecordKind.Data ? q.Desc.BlockCount : 0;
        }
        // One header block per 64 descriptors is more than the batch format needs.
        var headerBlocks = 1 + _queue.Count / 64;
        return blocks <= MaxBatchBlocks && PlainAppendFits(blocks + headerBlocks);
    }

    private sealed class DrainKick(Appender appender) : Async.ICompletionBatchListener
    {
        public void OnBatchCompleted() => appender.DrainDeferred();
    }

    /// <summary>
    /// Writes <paramref name="r"/>, or (null) the requests already moved into <see cref="_inlineWork"/>,
    /// on the submitter's thread, holding <see cref="_busy"/> as the appender thread would.
    /// </summary>
    private void WriteInline(AppendRequest? r)
    {
        var busyFrom = System.Diagnostics.Stopwatch.GetTimestamp();
        var batchesBefore = Batches;
        if (r != null)
        {
            _inlineWork.Add(r);
        }
        // Drained records (r null) qualify when there is one, a plain data record (WriteBatch
        // checks the kind): one item means one pass of Process, which the deferred write needs
        // (the next pass would reuse the batch buffer).
        _ackEarly = _inlineWork.Count == 1 && WillAckEarly(_inlineWork[0]);
        _parking = false;
        try
        {
            Process(_inlineWork);
        }
        catch (Exception e)
        {
            Interlocked.CompareExchange(ref _poison, e, null);
            foreach (var w in _inlineWork)
            {
                TryFail(w, new BlockVolumeException(BlockError.Io, $"internal error in the log appender: {e.Message}", e));
            }
            if (_writeDeferred)
            {
                // A record whose request failed must not reach the log. The map may already hold
                // it: the pool is poisoned, so no checkpoint persists that map (see
                // Pool.WriteCheckpointLockedAsync) and the next open replays the log as written.
                _writeDeferred = false;
                Pending.End();
            }
        }
        _ackEarly = false;
        _inlineWork.Clear();
        if (_writeDeferred)
        {
            // Acknowledged: the device write (and the log's release) waits for the end of the
            // submitter's batch, after the reply it let go.
            _deferredBusyFrom = busyFrom;
            _deferredBatchesBefore = batchesBefore;
            if (!Async.CompletionBatch.TryDeferLast(_deferredKick))
            {
                WriteDeferred();
            }
            return;
        }
        EndInline(busyFrom, batchesBefore);
    }

    /// <summary>A lone write without FUA from a thread in a completion batch is acknowledged before its device write.</summary>
    private bool WillAckEarly(AppendRequest r) =>
        AckBeforeDeviceWrite && (r.Desc.Flags & RecordFlags.Fua) == 0 && Async.CompletionBatch.IsOpen;

    /// <summary>The device write of the lone write acknowledged before it, then the log's release.</summary>
    private void WriteDeferred()
    {
        _writeDeferred = false;
        var bytes = _builder.Finished;
        var writeFrom = System.Diagnostics.Stopwatch.GetTimestamp();
        try
        {
            _storage.Write(_layout.SegmentOffset(Segment) + _deferredBatchOffset, bytes.Span);
            WriteTicks += System.Diagnostics.Stopwatch.GetTimestamp() - writeFrom;
            BatchWritten(_deferredBatchOffset, bytes.Length);
            Appended?.Invoke(bytes.Length);
        }
        catch (Exception e)
        {
            // The client has its reply: the write is lost, and a FLUSH must say so. What the map
            // now points at was never written; its checksum fails if it is read.
            var lost = new BlockVolumeException(BlockError.Io, $"a write acknowledged before it reached the device was lost: {e.Message}", e);
            Interlocked.CompareExchange(ref _poison, lost, null);
            _syncer.Fail(lost);
        }
        finally
        {
            Pending.End();
            EndInline(_deferredBusyFrom, _deferredBatchesBefore);
        }
    }

    private sealed class DeferredWriteKick(Appender appender) : Async.ICompletionBatchListener
    {
        public void OnBatchCompleted() => appender.WriteDeferred();
    }

    private void EndInline(long busyFrom, long batchesBefore)
    {
        InlineBatches += Batches - batchesBefore;
        BusyTicks += System.Diagnostics.Stopwatch.GetTimestamp() - busyFrom;
        lock (_lock)
        {
            _busy = false;
            // Whatever arrived meanwhile (or was parked) is the appender thread's now.
            if (_queue.Count > 0 || _parked.Count > 0 || _stopping)
            {
                Monitor.Pulse(_lock);
            }
        }
    }

    /// <summary>Raises a volume's last-issued LSN (never lowers it), under the queue lock that issues LSNs.</summary>
    public void RaiseNextLsn(VolumeState v, long lsn)
    {
        lock (_lock)
        {
            v.NextLsn = Math.Max(v.NextLsn, lsn);
        }
    }

    /// <summary>Runs <paramref name="action"/> on the appender thread at a batch boundary (all earlier records applied).</summary>
    public async Task RunAtBoundaryAsync(Action action)
    {
        var r = Rent();
        r.Op = AppendOp.Control;
        r.Apply = _ => action();
        try
        {
            await SubmitAsync(r).ConfigureAwait(false);
        }
        finally
        {
            Return(r);
        }
    }

    /// <summary>From now on records fail (the pool is closing and its final checkpoint was captured).</summary>
    public void RefuseWrites() => _refuseWrites = true;

    /// <summary>Nobody is writing the log and nothing waits for it (tests).</summary>
    internal bool IsIdle
    {
        get
        {
            lock (_lock)
            {
                return !_busy && _queue.Count == 0 && _parked.Count == 0;
            }
        }
    }

    public void Stop()
    {
        lock (_lock)
        {
            if (_stopping)
            {
                return;
            }
            _stopping = true;
            Monitor.Pulse(_lock);
        }
        if (_thread.IsAlive)
        {
            _thread.Join();
        }
        _syncer.Dispose();
    }

    private void Run()
    {
        while (true)
        {
            string? failParked;
            lock (_lock)
            {
                while (_busy || _queue.Count == 0 && !(_parked.Count > 0 && (_spaceFreed || _failParked != null || ParkExpired())))
                {
                    if (_busy)
                    {
                        // A submitter is writing its own request; it pulses when done.
                        Monitor.Wait(_lock);
                        continue;
                    }
                    if (_stopping)
                    {
                        if (_parked.Count == 0)
                        {
                            return;
                        }
                        _failParked = "the pool is shutting down";
                        break;
                    }
                    if (_parked.Count > 0)
                    {
                        Monitor.Wait(_lock, 100);
                    }
                    else
                    {
                        Monitor.Wait(_lock);
                    }
                }
                (_queue, _taken) = (_taken, _queue);
                _busy = true;
                _spaceFreed = false;
                failParked = _failParked;
                _failParked = null;
            }
            var busyFrom = System.Diagnostics.Stopwatch.GetTimestamp();
            _work.Clear();
            _work.AddRange(_parked);
            _parked.Clear();
            _work.AddRange(_taken);
            _taken.Clear();
            _parking = false;
            try
            {
                if (failParked != null)
                {
                    FailAllParked(failParked);
                }
                Process(_work);
            }
            catch (Exception e)
            {
                // A bug here must not hang every client: fail what is left and poison the log.
                Interlocked.CompareExchange(ref _poison, e, null);
                foreach (var r in _work)
                {
                    TryFail(r, new BlockVolumeException(BlockError.Io, $"internal error in the log appender: {e.Message}", e));
                }
            }
            _work.Clear();
            BusyTicks += System.Diagnostics.Stopwatch.GetTimestamp() - busyFrom;
            lock (_lock)
            {
                _busy = false;
            }
        }
    }

    private bool ParkExpired() => _parked.Count > 0 && Environment.TickCount64 - _parked[0].ParkedAt > SpaceWait.TotalMilliseconds;

    /// <summary>
    /// Fails the parked data writes (at the head of the work list). Trims and metadata parked
    /// behind them go on: they may use the reserve, and a trim is how space comes back.
    /// </summary>
    private void FailAllParked(string reason)
    {
        for (var i = 0; i < _work.Count; i++)
        {
            var r = _work[i];
            if (r.ParkedAt == 0)
            {
                break;
            }
            if (!r.UseReserve)
            {
                r.Fail(new BlockVolumeException(BlockError.NoSpace, $"the pool is full and {reason}; trim or delete data, or grow the pool"));
                _work[i] = null!;
            }
        }
        _work.RemoveAll(r => r == null);
    }

    private static void TryFail(AppendRequest r, Exception e)
    {
        try
        {
            r.Fail(e);
        }
        catch (InvalidOperationException)
        {
            // Already completed.
        }
    }

    private void Process(List<AppendRequest> items)
    {
        var i = 0;
        while (i < items.Count)
        {
            _builder.Reset();
            _batchItems.Clear();
            _durableItems.Clear();
            _inPlace.Clear();
            _stageUsed = 0;
            var needSync = false;
            while (i < items.Count)
            {
                var r = items[i];
                if (r.Op == AppendOp.Control)
                {
                    if (!_builder.IsEmpty)
                    {
                        break;
                    }
                    RunControl(r);
                    i++;
                    continue;
                }
                if (r.Op == AppendOp.Flush)
                {
                    _durableItems.Add(r);
                    needSync = true;
                    i++;
                    continue;
                }
                if (_parking && r.Volume != null)
                {
                    Park(r);
                    i++;
                    continue;
                }
                if (Poison is { } poison)
                {
                    r.Fail(new BlockVolumeException(BlockError.Io, $"the pool stopped accepting writes after a device error: {poison.Message}", poison));
                    i++;
                    continue;
                }
                if (_refuseWrites)
                {
                    r.Fail(new BlockVolumeException(BlockError.Gone, "the pool is shutting down"));
                    i++;
                    continue;
                }
                if (r.Volume is { Deleted: true })
                {
                    r.Fail(new BlockVolumeException(BlockError.Gone, $"volume {r.Volume.Name} was deleted"));
                    i++;
                    continue;
                }
                var data = r.Desc.Kind == RecordKind.Data;
                if (data && TryAddInPlace(r))
                {
                    if ((r.Desc.Flags & RecordFlags.Fua) != 0)
                    {
                        _durableItems.Add(r);
                        needSync = true;
                    }
                    i++;
                    continue;
                }
                if (!r.UseReserve && _headReserved)
                {
                    if (_segments.FreeCount > DataReserve)
                    {
                        _headReserved = false;
                    }
                    else
                    {
                        // The head was opened from the reserve (for the cleaner or metadata):
                        // client data waiting here is what the reserve exists to keep out.
                        OnNoSpace(r);
                        i++;
                        continue;
                    }
                }
                var inlineLen = r.Inline?.Length ?? 0;
                if (_builder.Fits(r.Desc.BlockCount, inlineLen, data, _layout.BatchLimit - Offset))
                {
                    var first = data && CanBorrow(r, out var whole)
                        ? _builder.AddBorrowed(ref r.Desc, r.Crcs, whole)
                        : _builder.Add(ref r.Desc, r.Crcs, r.Inline, data ? r.Payload.Span : default);
                    r.ResultPhys = first;
                    _batchItems.Add(r);
                    if ((r.Desc.Flags & RecordFlags.Fua) != 0)
                    {
                        _durableItems.Add(r);
                        needSync = true;
                    }
                    i++;
                    continue;
                }
                if (!_builder.IsEmpty)
                {
                    break;
                }
                if (data && (r.Desc.Flags & RecordFlags.Relocated) == 0 && TrySplit(r))
                {
                    // The head of the record fills this segment; the rest goes on after the batch.
                    break;
                }
                if ((r.Desc.Flags & RecordFlags.Relocated) != 0 && TryPullForward(items, i))
                {
                    // A later copy that fits the segment's rest goes first; this one waits its turn.
                    continue;
                }
                // Even an empty batch does not fit what is left of this segment: move to the next.
                switch (TryAdvanceSegment(r))
                {
                    case Advance.NoSpace:
                        OnNoSpace(r);
                        i++;
                        break;
                    case Advance.Failed:
                        i++;
                        break;
                }
            }
            WriteBatch(needSync);
            if (_splitAborted)
            {
                // The head of a split record failed to write: the request is failed, skip its rest.
                _splitAborted = false;
                i++;
            }
        }
    }

    /// <summary>
    /// A client's large aligned payload goes to the device from the client's buffer: the client
    /// waits for this write before it may reuse the buffer. A lone write that will be acknowledged
    /// before its device write is copied (its client may reuse the buffer first; the early reply
    /// saves more than the copy costs), and <see cref="WriteBatch"/> never acknowledges early a
    /// batch that borrowed. Cleaner copies and records with inline bytes are copied as before.
    /// </summary>
    private bool CanBorrow(AppendRequest r, out ReadOnlyMemory<byte> whole)
    {
        whole = default;
        if (_ackEarly || r.Volume == null || (r.Desc.Flags & RecordFlags.Relocated) != 0 || r.Inline is { Length: > 0 })
        {
            return false;
        }
        var bytes = r.Desc.BlockCount << PoolLayout.BlockShift;
        if (r.Payload.Length < bytes || !_builder.CanBorrow(r.Payload[..bytes]))
        {
            return false;
        }
        whole = r.Payload[..bytes];
        return true;
    }

    /// <summary>
    /// Near a full pool, puts a client data record into recycled holes: its descriptor goes into
    /// the batch, its payload into the staging buffer, written before the batch. Only plain
    /// client and replica writes: cleaner copies and resync records stay in the log.
    /// </summary>
    private bool TryAddInPlace(AppendRequest r)
    {
        if (r.Volume == null || (r.Desc.Flags & (RecordFlags.Relocated | RecordFlags.IfNewer)) != 0 || r.SplitRemaining > 0
            || _segments.FreeCount > RecycleBelow)
        {
            return false;
        }
        if (_holes.Remaining < HolesLowMark && !_holesLowSignalled)
        {
            _holesLowSignalled = true;
            SpaceLow?.Invoke();
        }
        var n = r.Desc.BlockCount;
        var bytes = n << PoolLayout.BlockShift;
        if (_holes.Remaining < n || _stageUsed + bytes > MaxStageBytes || !_builder.FitsInPlace(n, _layout.BatchLimit - Offset)
            || !_holes.TryTake(n, out var phys))
        {
            return false;
        }
        r.Payload.Span[..bytes].CopyTo(_stage.Span[_stageUsed..]);
        _inPlace.Add((phys, _stageUsed, n));
        _stageUsed += bytes;
        r.Desc.Flags |= RecordFlags.InPlace;
        r.Desc.Aux = phys;
        _builder.Add(ref r.Desc, r.Crcs, null, default);
        r.ResultPhys = phys;
        _batchItems.Add(r);
        return true;
    }

    /// <summary>
    /// Writes the batch's staged in-place data, one write per run of adjacent holes, and syncs
    /// it before the batch that describes it is written: a record in the log then always finds
    /// its data, so replay keeps the log a prefix (a snapshot record after a torn in-place write
    /// would otherwise freeze a state that never was). A failed sync poisons the log.
    /// </summary>
    private void WriteInPlace()
    {
        var i = 0;
        while (i < _inPlace.Count)
        {
            var (phys, offset, n) = _inPlace[i];
            var j = i + 1;
            while (j < _inPlace.Count && _inPlace[j].Phys == phys + n && _inPlace[j].Offset == offset + (n << PoolLayout.BlockShift))
            {
                n += _inPlace[j].Count;
                j++;
            }
            _storage.Write(phys << PoolLayout.BlockShift, _stage.Span.Slice(offset, n << PoolLayout.BlockShift));
            DeviceBytes += n << PoolLayout.BlockShift;
            i = j;
        }
        try
        {
            _storage.Sync();
            InPlaceSyncs++;
        }
        catch (Exception e)
        {
            Interlocked.CompareExchange(ref _poison, e, null);
            _syncer.Fail(e);
            throw;
        }
    }

    /// <summary>
    /// Puts as many leading blocks of a client data record as fit into the (empty) batch, so a
    /// segment is not sealed with space left. Both parts keep the record's LSN; the client is
    /// completed when the last part is written.
    /// </summary>
    private bool TrySplit(AppendRequest r)
    {
        var spaceLeft = _layout.BatchLimit - Offset;
        var k = Math.Min(r.Desc.BlockCount - 1, (spaceLeft - PoolLayout.BlockSize) >> PoolLayout.BlockShift);
        while (k > 0 && !_builder.Fits(k, 0, data: true, spaceLeft))
        {
            k--;
        }
        if (k <= 0)
        {
            return false;
        }
        r.SplitRemaining = r.Desc.BlockCount - k;
        r.Desc.BlockCount = k;
        var first = CanBorrow(r, out var head)
            ? _builder.AddBorrowed(ref r.Desc, r.Crcs, head)
            : _builder.Add(ref r.Desc, r.Crcs, null, r.Payload.Span[..(k << PoolLayout.BlockShift)]);
        r.ResultPhys = first;
        _batchItems.Add(r);
        return true;
    }

    /// <summary>
    /// Cleaner copies carry no LSN and take effect only at their commit record, so their order
    /// among themselves is free: swaps in the first later copy that fits what is left of the
    /// segment, instead of sealing the segment with that space unused. Only copies are
    /// searched, so client records keep their order.
    /// </summary>
    private bool TryPullForward(List<AppendRequest> items, int i)
    {
        var spaceLeft = _layout.BatchLimit - Offset;
        for (var j = i + 1; j < items.Count && j < i + 4096; j++)
        {
            var c = items[j];
            if (c.Op != AppendOp.Record || (c.Desc.Flags & RecordFlags.Relocated) == 0)
            {
                continue;
            }
            if (_builder.Fits(c.Desc.BlockCount, 0, data: true, spaceLeft))
            {
                (items[i], items[j]) = (items[j], items[i]);
                return true;
            }
        }
        return false;
    }

    /// <summary>After the head part of a split record was written and applied, makes the request describe the rest.</summary>
    private static void AdvanceSplit(AppendRequest r)
    {
        var k = r.Desc.BlockCount;
        r.Desc.Lba += k;
        r.Desc.BlockCount = r.SplitRemaining;
        r.Payload = r.Payload[(k << PoolLayout.BlockShift)..];
        Array.Copy(r.Crcs, k, r.Crcs, 0, r.SplitRemaining);
        r.ResultPhys = -1;
    }

    /// <summary>No segment may be taken for this request: a client write waits for the cleaner (up to SpaceWait), anything else fails.</summary>
    private void OnNoSpace(AppendRequest r)
    {
        if (!r.UseReserve && !r.NoPark && SpaceWait > TimeSpan.Zero && (r.ParkedAt == 0 || Environment.TickCount64 - r.ParkedAt <= SpaceWait.TotalMilliseconds))
        {
            // Wait for the cleaner rather than fail a client on a pool full of dead data.
            Park(r);
            _parking = true;
        }
        else
        {
            r.Fail(NoSpace(r));
        }
        SpaceLow?.Invoke();
    }

    private void Park(AppendRequest r)
    {
        if (r.ParkedAt == 0)
        {
            r.ParkedAt = Environment.TickCount64;
            Parks++;
        }
        lock (_lock)
        {
            _parked.Add(r);
        }
    }

    /// <summary>
    /// Free segments a request must leave: client data stops first (DataReserve), cleaner copies
    /// one above MinReserve so the cleaner's commit record always finds room, and trims and
    /// metadata may go down to MinReserve (what the next checkpoint needs).
    /// </summary>
    private int ReserveFor(AppendRequest r) => !r.UseReserve ? DataReserve
        : (r.Desc.Flags & RecordFlags.Relocated) != 0 ? MinReserve + 1
        : MinReserve;

    private BlockVolumeException NoSpace(AppendRequest r) => new(BlockError.NoSpace,
        $"the pool is full ({_segments.FreeCount} of {_segments.Count} segments free, {ReserveFor(r)} kept in reserve); trim or delete data, or grow the pool");

    private void RunControl(AppendRequest r)
    {
        try
        {
            r.Apply!(r);
            r.Complete();
        }
        catch (Exception e)
        {
            r.Fail(e);
        }
    }

    private void WriteBatch(bool needSync)
    {
        if (!_builder.IsEmpty)
        {
            var batchOffset = Offset;
            var bytes = _builder.Finish(Seq, batchOffset, ++_batchSeq, out var headerBytes);
            if (_ackEarly && !needSync && _batchItems.Count == 1 && _inPlace.Count == 0 && _batchItems[0].SplitRemaining == 0
                && _batchItems[0].Desc.Kind == RecordKind.Data && !_builder.HasBorrowed)
            {
                AckBeforeWrite(batchOffset, headerBytes);
                return;
            }
            var writeFrom = System.Diagnostics.Stopwatch.GetTimestamp();
            try
            {
                if (_inPlace.Count > 0)
                {
                    WriteInPlace();
                }
                if (_builder.HasBorrowed)
                {
                    _storage.WriteGather(_layout.SegmentOffset(Segment) + batchOffset, _builder.Parts());
                    BorrowedBytes += _builder.BorrowedBytes;
                }
                else
                {
                    _storage.Write(_layout.SegmentOffset(Segment) + batchOffset, bytes);
                }
                WriteTicks += System.Diagnostics.Stopwatch.GetTimestamp() - writeFrom;
            }
            catch (Exception e)
            {
                var error = e is StorageException { IsNoSpace: true }
                    ? new BlockVolumeException(BlockError.NoSpace, "the device under the pool is full", e)
                    : new BlockVolumeException(BlockError.Io, $"log write failed: {e.Message}", e);
                foreach (var r in _batchItems)
                {
                    _splitAborted |= r.SplitRemaining > 0;
                    r.Fail(error);
                }
                foreach (var r in _durableItems)
                {
                    if (r.Op == AppendOp.Flush)
                    {
                        r.Fail(error);
                    }
                }
                return;
            }
            BatchWritten(batchOffset, bytes.Length);
            ApplyBatch(batchOffset, headerBytes);
            Appended?.Invoke(bytes.Length);
        }
        // Complete what needs no sync before syncing: their latency should not include it.
        using (Async.CompletionBatch.Begin())
        {
            CompleteWritten();
        }
        if (needSync)
        {
            if (Poison is { } poison)
            {
                foreach (var r in _durableItems)
                {
                    r.Fail(new BlockVolumeException(BlockError.Io, $"flush failed: {poison.Message}", poison));
                }
            }
            else
            {
                _syncer.Enqueue(_durableItems);
            }
        }
    }

    /// <summary>
    /// Applies and completes the batch's one lone write before its device write, which
    /// <see cref="WriteDeferred"/> does when the submitter's batch ends; readers meanwhile take
    /// its blocks from the batch buffer.
    /// </summary>
    private void AckBeforeWrite(int batchOffset, int headerBytes)
    {
        _deferredBatchOffset = batchOffset;
        _writeDeferred = true;
        Pending.Begin(_layout.SegmentOffset(Segment) + batchOffset, _builder.Finished);
        ApplyBatch(batchOffset, headerBytes);
        EarlyAcks++;
        CompleteWritten();
    }

    /// <summary>The batch written at <paramref name="batchOffset"/> reached the device: the log's position and counters move on.</summary>
    private void BatchWritten(int batchOffset, int length)
    {
        _syncer.Wrote();
        Offset = batchOffset + length;
        DeviceBytes += length;
        Batches++;
        var seg = _segments[Segment];
        seg.WriteOffset = Offset;
        seg.LastWriteTicks = Environment.TickCount64;
    }

    /// <summary>Gives the batch's records their blocks and checksums and applies them to the maps, in log order.</summary>
    private void ApplyBatch(int batchOffset, int headerBytes)
    {
        var seg = _segments[Segment];
        var payloadBase = _layout.BlockAddress(Segment, batchOffset + headerBytes);
        foreach (var r in _batchItems)
        {
            if ((r.Desc.Flags & RecordFlags.InPlace) != 0)
            {
                _segments.SetRecycled(r.ResultPhys, r.Crcs.AsSpan(0, r.Desc.BlockCount), Seq);
                ClientDataBlocks += r.Desc.BlockCount;
                RecycledBlocks += r.Desc.BlockCount;
            }
            else if (r.Desc.Kind == RecordKind.Data)
            {
                r.ResultPhys = payloadBase + r.ResultPhys;
                _segments.SetCrcs(r.ResultPhys, r.Crcs.AsSpan(0, r.Desc.BlockCount));
                seg.WrittenBlocks += r.Desc.BlockCount;
                if ((r.Desc.Flags & RecordFlags.Relocated) != 0)
                {
                    RelocatedBlocks += r.Desc.BlockCount;
                }
                else
                {
                    ClientDataBlocks += r.Desc.BlockCount;
                }
            }
            ApplyRecord(r);
        }
    }

    private void CompleteWritten()
    {
        foreach (var r in _batchItems)
        {
            if (r.SplitRemaining > 0)
            {
                // Only its head was written: it goes on in the next batch, in the same place in line.
                AdvanceSplit(r);
                r.SplitRemaining = 0;
                continue;
            }
            if ((r.Desc.Flags & RecordFlags.Fua) == 0)
            {
                r.Complete();
            }
        }
    }

    private void ApplyRecord(AppendRequest r)
    {
        var vol = r.Volume;
        if (vol != null && (r.Desc.Flags & RecordFlags.Relocated) == 0)
        {
            lock (vol.Lock)
            {
                if (!vol.Deleted)
                {
                    var d = r.Desc;
                    var kind = d.Kind switch
                    {
                        RecordKind.Data => ExtentKind.Data,
                        RecordKind.Zero => ExtentKind.Zero,
                        RecordKind.Trim => ExtentKind.Hole,
                        _ => ExtentKind.Unmapped,
                    };
                    if ((d.Flags & RecordFlags.IfNewer) != 0)
                    {
                        if (kind != ExtentKind.Unmapped && (d.Flags & RecordFlags.Force) != 0)
                        {
                            vol.Map.Set(d.Lba, d.BlockCount, kind, kind == ExtentKind.Data ? r.ResultPhys : 0, d.Aux, _displaced);
                        }
                        else if (kind != ExtentKind.Unmapped)
                        {
                            vol.Map.SetIfNewer(d.Lba, d.BlockCount, kind, r.ResultPhys, d.Aux, _displaced);
                        }
                    }
                    else if (kind != ExtentKind.Unmapped)
                    {
                        vol.Map.Set(d.Lba, d.BlockCount, kind, kind == ExtentKind.Data ? r.ResultPhys : 0, d.Lsn, _displaced);
                    }
                    if (r.SplitRemaining == 0)
                    {
                        // A split record's head does not count as applied: a checkpoint taken before
                        // its rest is written must still let replay apply that rest (same LSN).
                        vol.AppliedLsn = d.Lsn;
                    }
                }
            }
        }
        r.Apply?.Invoke(r);
    }

    private enum Advance
    {
        Advanced,
        /// <summary>No segment may be taken for this request now.</summary>
        NoSpace,
        /// <summary>A device error; the request was failed.</summary>
        Failed,
    }

    /// <summary>Seals the current segment and opens the next one.</summary>
    private Advance TryAdvanceSegment(AppendRequest r)
    {
        var reserve = ReserveFor(r);
        var next = _segments.Allocate(SegmentState.Log, reserve);
        if (next < 0)
        {
            return Advance.NoSpace;
        }
        SealedUnusedBytes += _layout.BatchLimit - Offset;
        _headReserved = _segments.FreeCount < DataReserve;
        SegmentsOpened++;
        if (!r.UseReserve)
        {
            SegmentsOpenedForClients++;
        }
        var nextSeq = LastSeq + 1;
        try
        {
            _storage.Allocate(_layout.SegmentOffset(next), _layout.SegmentSize);
            if (nextSeq > _superblock.Current.SeqReserved)
            {
                // Sequence numbers are reserved durably ahead of use, so recovery can always pick
                // one that no stale segment on the device carries.
                _superblock.Update(s => s.SeqReserved = nextSeq + 1024);
            }
            WriteSegmentHeader(next, nextSeq);
            WriteSeal(next, nextSeq);
        }
        catch (Exception e)
        {
            _segments.Release(next);
            var noSpace = e is StorageException { IsNoSpace: true };
            r.Fail(new BlockVolumeException(noSpace ? BlockError.NoSpace : BlockError.Io,
                noSpace ? "the device under the pool is full" : $"cannot open a new log segment: {e.Message}", e));
            return Advance.Failed;
        }
        _segments[next].Seq = nextSeq;
        LastSeq = nextSeq;
        Segment = next;
        Seq = nextSeq;
        Offset = _layout.FirstBatchOffset;
        if (_segments.FreeCount <= Math.Max(CleanThreshold, DataReserve + 1))
        {
            SpaceLow?.Invoke();
        }
        return Advance.Advanced;
    }

    private unsafe void WriteSegmentHeader(int segment, ulong seq)
    {
        using var buf = new Buffers.AlignedBuffer(PoolLayout.BlockSize);
        new SegmentHeader(SegmentKind.Log, _poolId, segment, seq).Encode(buf.Span);
        _storage.Write(_layout.SegmentOffset(segment), buf.Span);
        DeviceBytes += PoolLayout.BlockSize;
        _syncer.Wrote();
    }

    /// <summary>
    /// Writes a seal at the current offset pointing at (next, nextSeq), followed by the segment
    /// summary (every block's CRC), in one write.
    /// </summary>
    internal void WriteSeal(int next, ulong nextSeq)
    {
        var e = _segments[Segment];
        var summary = _sealBuffer.Span[PoolLayout.BlockSize.._layout.SealBytes];
        SegmentSummary.Encode(e.Crcs, summary);
        var summaryCrc = Crc32C.Compute(summary);
        _sealBuilder.Reset();
        var d = new RecordDescriptor { Kind = RecordKind.Seal, Aux = next, Lba = (long)nextSeq, Flags = RecordFlags.None };
        _sealBuilder.Add(ref d, default, SegmentSummary.SealInline(summaryCrc), default);
        _sealBuilder.Finish(Seq, Offset, ++_batchSeq, out _).CopyTo(_sealBuffer.Span);
        _storage.Write(_layout.SegmentOffset(Segment) + Offset, _sealBuffer.Span[.._layout.SealBytes]);
        DeviceBytes += _layout.SealBytes;
        _syncer.Wrote();
        e.WriteOffset = Offset + _layout.SealBytes;
        e.SummaryCrc = summaryCrc;
        e.Sealed = true;
    }

    /// <summary>
    /// Used once after recovery, before the thread starts: closes the recovered log end with a
    /// seal and continues in a fresh segment whose sequence number no stale data can carry.
    /// </summary>
    public void StartFreshSegment()
    {
        var next = _segments.Allocate(SegmentState.Log, 0);
        if (next < 0)
        {
            throw new IOException("no free segment to continue the log after recovery");
        }
        var nextSeq = Math.Max(LastSeq, _superblock.Current.SeqReserved) + 1;
        _storage.Allocate(_layout.SegmentOffset(next), _layout.SegmentSize);
        _superblock.Update(s => s.SeqReserved = nextSeq + 1024);
        if (_segments.StateOf(Segment) == SegmentState.Log)
        {
            if (Offset == 0)
            {
                WriteSegmentHeader(Segment, Seq);
                Offset = _layout.FirstBatchOffset;
            }
            WriteSeal(next, nextSeq);
        }
        WriteSegmentHeader(next, nextSeq);
        _segments[next].Seq = nextSeq;
        LastSeq = nextSeq;
        Segment = next;
        Seq = nextSeq;
        Offset = _layout.FirstBatchOffset;
        _storage.Sync();
    }

    public LogPosition Position => new(Segment, Seq, Offset);

    public void Dispose()
    {
        Stop();
        _builder.Dispose();
        _sealBuilder.Dispose();
        ((IDisposable)_sealBuffer).Dispose();
        ((IDisposable)_stage).Dispose();
    }
}
