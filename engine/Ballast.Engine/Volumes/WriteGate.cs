namespace Ballast.Engine.Volumes;

/// <summary>
/// Orders read-modify-write against other writes of one volume. Whole-block writes pass freely
/// (two interlocked operations); a sub-block write waits until no write is in flight and holds
/// the volume's writes back while it reads, merges and appends. Otherwise an aligned write landing
/// between the RMW's read and its append would be silently undone for the bytes the RMW did not
/// touch. Sub-block writes are rare (partition tables, 512-byte metadata), so a volume-wide
/// barrier is the simple correct choice.
/// </summary>
internal sealed class WriteGate
{
    private readonly SemaphoreSlim _exclusive = new(1, 1);
    private readonly object _lock = new();
    private int _shared;
    private int _exclusiveWanted;
    private TaskCompletionSource? _sharedDrained;
    private TaskCompletionSource? _exclusiveDone;

    public ValueTask EnterSharedAsync()
    {
        Interlocked.Increment(ref _shared);
        if (Volatile.Read(ref _exclusiveWanted) == 0)
        {
            return ValueTask.CompletedTask;
        }
        ExitShared();
        return new ValueTask(EnterSharedSlowAsync());
    }

    private async Task EnterSharedSlowAsync()
    {
        while (true)
        {
            Task wait;
            lock (_lock)
            {
                if (_exclusiveWanted == 0)
                {
                    Interlocked.Increment(ref _shared);
                    return;
                }
                _exclusiveDone ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                wait = _exclusiveDone.Task;
            }
            await wait.ConfigureAwait(false);
        }
    }

    public void ExitShared()
    {
        if (Interlocked.Decrement(ref _shared) == 0 && Volatile.Read(ref _exclusiveWanted) != 0)
        {
            lock (_lock)
            {
                _sharedDrained?.TrySetResult();
            }
        }
    }

    public async Task EnterExclusiveAsync(CancellationToken ct)
    {
        Interlocked.Increment(ref _exclusiveWanted);
        try
        {
            await _exclusive.WaitAsync(ct).ConfigureAwait(false);
        }
        catch
        {
            ReleaseWanted();
            throw;
        }
        while (Volatile.Read(ref _shared) != 0)
        {
            TaskCompletionSource drained;
            lock (_lock)
            {
                drained = _sharedDrained = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            }
            // Re-check after publishing the waiter: the last shared holder may have left just before.
            if (Volatile.Read(ref _shared) == 0)
            {
                break;
            }
            await drained.Task.ConfigureAwait(false);
        }
    }

    public void ExitExclusive()
    {
        _exclusive.Release();
        ReleaseWanted();
    }

    private void ReleaseWanted()
    {
        if (Interlocked.Decrement(ref _exclusiveWanted) == 0)
        {
            lock (_lock)
            {
                var done = _exclusiveDone;
                _exclusiveDone = null;
                done?.TrySetResult();
            }
        }
    }
}
