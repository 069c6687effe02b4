using System.Threading.Tasks.Sources;
using Ballast.Engine.Volumes;

namespace Ballast.Engine.Log;

internal enum AppendOp : byte
{
    /// <summary>A record to write (and apply).</summary>
    Record,
    /// <summary>Completes when everything submitted before it is durable.</summary>
    Flush,
    /// <summary>Runs <see cref="AppendRequest.Apply"/> on the appender thread between batches (checkpoint freeze).</summary>
    Control,
}

/// <summary>
/// One unit of work for the appender, pooled so that a client write allocates nothing. The
/// submitter fills it, awaits it, reads the result and returns it to the appender's pool.
/// </summary>
internal sealed class AppendRequest : IValueTaskSource
{
    private ManualResetValueTaskSourceCore<bool> _core = new() { RunContinuationsAsynchronously = true };

    public AppendRequest(int maxBlocks) => Crcs = new uint[maxBlocks];

    public AppendOp Op;
    public RecordDescriptor Desc;
    public VolumeState? Volume;
    public ReadOnlyMemory<byte> Payload;
    public readonly uint[] Crcs;
    public byte[]? Inline;
    /// <summary>Runs on the appender thread once the record is written, in log order (metadata changes, freezes).</summary>
    public Action<AppendRequest>? Apply;
    /// <summary>May take segments from the reserve kept for trims, metadata and the cleaner.</summary>
    public bool UseReserve;
    /// <summary>Fails at once when the pool has no room instead of waiting for the cleaner (a caller that holds the cleaner's locks).</summary>
    public bool NoPark;
    /// <summary>First physical block of the payload once written.</summary>
    public long ResultPhys;
    public object? State;
    /// <summary>When the request first waited for free space (Environment.TickCount64), or 0.</summary>
    public long ParkedAt;
    /// <summary>A replica's record: use this LSN (the primary's) instead of assigning one. 0 assigns.</summary>
    public long ExplicitLsn;
    /// <summary>Completes when the replicas have the record (primary of a replicated volume), else default.</summary>
    public ValueTask ReplicaWait;
    /// <summary>Blocks of this data record still to write after the part in the current batch (split at a segment end).</summary>
    public int SplitRemaining;
    /// <summary>The submitter has nothing else in flight (WriteFlags.Alone): it may write the record itself when the log is idle.</summary>
    public bool Alone;
    /// <summary>
    /// Submitted inside a completion batch by a loop that submits several records at once (a
    /// replica's receive loop): the log's writer is woken when that batch ends, and if the log is
    /// idle then, the loop writes what it queued itself, as one batch.
    /// </summary>
    public bool DrainAtBatchEnd;

    public short Version => _core.Version;

    /// <summary>Runs the submitter's continuation on the thread that completes the request (see WriteFlags.CompleteInline).</summary>
    public bool CompleteInline
    {
        get => !_core.RunContinuationsAsynchronously;
        set => _core.RunContinuationsAsynchronously = !value;
    }

    public void Reset()
    {
        _core.Reset();
        _core.RunContinuationsAsynchronously = true;
        Op = AppendOp.Record;
        Desc = default;
        Volume = null;
        Payload = default;
        Inline = null;
        Apply = null;
        UseReserve = false;
        NoPark = false;
        ResultPhys = -1;
        State = null;
        ParkedAt = 0;
        SplitRemaining = 0;
        Alone = false;
        DrainAtBatchEnd = false;
        ExplicitLsn = 0;
        ReplicaWait = default;
    }

    public void Complete() => _core.SetResult(true);

    public void Fail(Exception e) => _core.SetException(e);

    public void GetResult(short token) => _core.GetResult(token);

    public ValueTaskSourceStatus GetStatus(short token) => _core.GetStatus(token);

    public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags)
        => _core.OnCompleted(continuation, state, token, flags);
}
