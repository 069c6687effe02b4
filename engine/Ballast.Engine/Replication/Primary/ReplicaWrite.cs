using System.Threading.Tasks.Sources;
using Ballast.Engine.Async;
using Ballast.Engine.Replication.Wire;
using Ballast.Engine.Volumes;

namespace Ballast.Engine.Replication.Primary;

/// <summary>
/// One forwarded record (or flush) waiting for the in-sync replicas, pooled so the write path
/// allocates nothing. A guard count held during sending avoids finishing before every replica
/// was asked. It completes with an error when fewer than the minimum of copies acknowledged.
/// The last answer arrives on a link's receive loop. For a writer that asked to complete inline
/// (short continuations that never block, like a frontend's reply), the continuation runs there,
/// inside the batch that loop holds open while it handles what one read brought: what it
/// completes waits for the batch's end, so the loop only hands out results. Otherwise (other
/// writers, a link failing) the write is finished from the thread pool, with this object
/// as the work item (the value-task core's own asynchronous mode allocated a work item per write).
/// </summary>
internal sealed class ReplicaWrite : IValueTaskSource, IResponseSink, IThreadPoolWorkItem
{
    private ManualResetValueTaskSourceCore<bool> _core;
    private Exception? _error;
    private VolumeReplicator _owner = null!;
    private int _remaining;
    private int _acked;
    private bool _completeInline;

    /// <summary>Tag bit: the replica is resyncing; its acknowledgement is not one of the copies.</summary>
    public const int NotCounted = 1 << 16;

    public short Version => _core.Version;

    public void Reset(VolumeReplicator owner, bool completeInline)
    {
        _core.Reset();
        _owner = owner;
        _completeInline = completeInline;
        _remaining = 1;
        _acked = 0;
    }

    /// <summary>One more replica was sent the request.</summary>
    public void Expect() => Interlocked.Increment(ref _remaining);

    /// <summary>Sending is over: drops the guard. If that was the last count, nobody awaits yet (the value task is not handed out): finish here.</summary>
    public void Armed() => Done(finishHere: true);

    public void OnResponse(ReplicationStatus status, ReadOnlySpan<byte> body, int tag, bool received)
    {
        if (status != ReplicationStatus.Ok)
        {
            _owner.TargetFailed(tag & ~NotCounted, status, body);
        }
        else if ((tag & NotCounted) == 0)
        {
            Interlocked.Increment(ref _acked);
        }
        // Only the receive loop's batch: a failing link answers from wherever it noticed (a
        // connection closing under a lock, say), where the writer's continuation must not run.
        Done(finishHere: received && _completeInline && CompletionBatch.IsOpen);
    }

    private void Done(bool finishHere)
    {
        if (Interlocked.Decrement(ref _remaining) != 0)
        {
            return;
        }
        var copies = 1 + Volatile.Read(ref _acked);
        if (_owner.Fenced)
        {
            _error = _owner.FencedError();
        }
        else if (copies < _owner.MinReplicas)
        {
            _error = new BlockVolumeException(BlockError.Fenced,
                $"volume {_owner.Name}: only {copies} of the {_owner.MinReplicas} required copies took the write; refusing to acknowledge it");
        }
        if (finishHere)
        {
            Finish();
        }
        else
        {
            ThreadPool.UnsafeQueueUserWorkItem(this, preferLocal: false);
        }
    }

    void IThreadPoolWorkItem.Execute() => Finish();

    private void Finish()
    {
        var error = _error;
        _error = null;
        if (error != null)
        {
            _core.SetException(error);
        }
        else
        {
            _core.SetResult(true);
        }
    }

    public void GetResult(short token)
    {
        try
        {
            _core.GetResult(token);
        }
        finally
        {
            _owner.Recycle(this);
        }
    }

    public ValueTaskSourceStatus GetStatus(short token) => _core.GetStatus(token);

    public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
        _core.OnCompleted(continuation, state, token, flags);
}
