using System.Threading.Tasks.Sources;

namespace Ballast.Engine.Async;

/// <summary>
/// An auto-reset event for one waiter and any number of setters, without allocation: a
/// frontend's send loop waits on it for replies, NBD's receive loop for a free request slot.
/// </summary>
public sealed class AsyncSignal : IValueTaskSource
{
    private const int Idle = 0, Signaled = 1, Waiting = 2;
    private ManualResetValueTaskSourceCore<bool> _core;
    private int _state;

    /// <param name="inline">The waiter runs on the thread that calls <see cref="Set"/> (it must be short and never block).</param>
    public AsyncSignal(bool inline = false) => _core = new() { RunContinuationsAsynchronously = !inline };

    public void Set()
    {
        while (true)
        {
            var s = Volatile.Read(ref _state);
            if (s == Signaled)
            {
                return;
            }
            if (s == Idle)
            {
                if (Interlocked.CompareExchange(ref _state, Signaled, Idle) == Idle)
                {
                    return;
                }
                continue;
            }
            if (Interlocked.CompareExchange(ref _state, Idle, Waiting) == Waiting)
            {
                _core.SetResult(true);
                return;
            }
        }
    }

    /// <summary>Completes when <see cref="Set"/> was called since the last wait. One waiter at a time.</summary>
    public ValueTask WaitAsync()
    {
        if (Interlocked.CompareExchange(ref _state, Idle, Signaled) == Signaled)
        {
            return default;
        }
        _core.Reset();
        if (Interlocked.CompareExchange(ref _state, Waiting, Idle) != Idle)
        {
            // Set between the two steps: consume it.
            Volatile.Write(ref _state, Idle);
            return default;
        }
        return new ValueTask(this, _core.Version);
    }

    public void GetResult(short token) => _core.GetResult(token);

    public ValueTaskSourceStatus GetStatus(short token) => _core.GetStatus(token);

    public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags)
        => _core.OnCompleted(continuation, state, token, flags);
}
