namespace Ballast.Engine.Async;

/// <summary>Told when the engine thread has finished completing a batch of requests.</summary>
public interface ICompletionBatchListener
{
    void OnBatchCompleted();
}

/// <summary>
/// An engine thread that completes a batch of requests with inline continuations (the appender
/// after a log write, the sync thread after an fdatasync) marks the batch, so a frontend can wake
/// its sender once for the whole batch instead of once per request: 32 replies then leave in one
/// send, not 32. Outside a batch <see cref="TryDefer"/> returns false and the caller wakes at once.
/// </summary>
public static class CompletionBatch
{
    [ThreadStatic] private static List<ICompletionBatchListener>? t_listeners;
    [ThreadStatic] private static bool t_open;

    /// <summary>True if a batch is open on this thread: <paramref name="listener"/> is called when it ends.</summary>
    public static bool TryDefer(ICompletionBatchListener listener)
    {
        if (!t_open)
        {
            return false;
        }
        (t_listeners ??= []).Add(listener);
        return true;
    }

    /// <summary>Opens a batch on this thread until the returned scope is disposed.</summary>
    internal static Scope Begin()
    {
        Open();
        return default;
    }

    internal static void Open() => t_open = true;

    internal static void Close()
    {
        t_open = false;
        var listeners = t_listeners;
        if (listeners == null)
        {
            return;
        }
        // The batch is closed first: what a listener's continuation completes now wakes at once.
        for (var i = 0; i < listeners.Count; i++)
        {
            listeners[i].OnBatchCompleted();
        }
        listeners.Clear();
    }

    /// <summary>Closes the batch <see cref="Begin"/> opened, also when completing threw.</summary>
    internal readonly ref struct Scope
    {
        public void Dispose() => Close();
    }
}
