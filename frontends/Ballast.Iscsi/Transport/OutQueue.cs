using Ballast.Engine.Async;

namespace Ballast.Iscsi.Transport;

/// <summary>
/// What the connection's send loop has to send, with one reader (the send loop) and any number
/// of writers. A response queued inside an engine thread's completion batch (the appender, the
/// sync thread, the io_uring reaper finishing a batch of commands) wakes the send loop once, when
/// that batch ends, and the loop then runs on that thread: no thread-pool hop between an I/O
/// finishing and its response leaving. Anything queued outside a batch (the receive loop, task
/// management, timers, which may hold locks) wakes it through the thread pool instead.
/// </summary>
internal sealed class OutQueue : ICompletionBatchListener, IThreadPoolWorkItem
{
    private readonly object _lock = new();
    private readonly Queue<OutItem> _items = new();
    private readonly AsyncSignal _ready = new(inline: true);
    private bool _completed;
    // Under _lock: a wake-up waits for the end of a batch, or is scheduled on the thread pool.
    private bool _wakeDeferred;
    private bool _wakeScheduled;

    /// <summary>Queues an item; false once <see cref="TryComplete"/> was called (nothing will send it).</summary>
    public bool TryWrite(OutItem item)
    {
        lock (_lock)
        {
            if (_completed)
            {
                return false;
            }
            _items.Enqueue(item);
            if (_wakeDeferred || _wakeScheduled)
            {
                return true;
            }
            if (CompletionBatch.TryDefer(this))
            {
                _wakeDeferred = true;
                return true;
            }
            _wakeScheduled = true;
        }
        ThreadPool.UnsafeQueueUserWorkItem(this, preferLocal: false);
        return true;
    }

    /// <summary>No more items: the reader gets what is queued, then the end.</summary>
    public void TryComplete()
    {
        lock (_lock)
        {
            if (_completed)
            {
                return;
            }
            _completed = true;
            if (_wakeScheduled)
            {
                return;
            }
            _wakeScheduled = true;
        }
        // Callers close connections from anywhere: the send loop must not run on their thread.
        ThreadPool.UnsafeQueueUserWorkItem(this, preferLocal: false);
    }

    public bool TryRead(out OutItem item)
    {
        lock (_lock)
        {
            return _items.TryDequeue(out item);
        }
    }

    /// <summary>True when items are queued; false when the queue is completed and empty.</summary>
    [System.Runtime.CompilerServices.AsyncMethodBuilder(typeof(System.Runtime.CompilerServices.PoolingAsyncValueTaskMethodBuilder<>))]
    public async ValueTask<bool> WaitToReadAsync()
    {
        while (true)
        {
            lock (_lock)
            {
                if (_items.Count > 0)
                {
                    return true;
                }
                if (_completed)
                {
                    return false;
                }
            }
            await _ready.WaitAsync().ConfigureAwait(false);
        }
    }

    void ICompletionBatchListener.OnBatchCompleted()
    {
        lock (_lock)
        {
            _wakeDeferred = false;
        }
        _ready.Set();
    }

    void IThreadPoolWorkItem.Execute()
    {
        lock (_lock)
        {
            _wakeScheduled = false;
        }
        _ready.Set();
    }
}
