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
    // A listener that opens and closes a batch of its own (the appender writing what a receive
    // loop queued) needs a second list while the first is being walked: kept, not allocated each time.
    [ThreadStatic] private static List<ICompletionBatchListener>? t_spare;
    [ThreadStatic] private static bool t_open;
    [ThreadStatic] private static ICompletionBatchListener? t_last;

    /// <summary>
    /// True if a batch is open on this thread: <paramref name="listener"/> is called when it ends,
    /// once however often it was deferred to this batch.
    /// </summary>
    public static bool TryDefer(ICompletionBatchListener listener)
    {
        if (!t_open)
        {
            return false;
        }
        var listeners = t_listeners;
        if (listeners == null)
        {
            listeners = t_spare ?? [];
            t_spare = null;
            t_listeners = listeners;
        }
        if (!listeners.Contains(listener))
        {
            listeners.Add(listener);
        }
        return true;
    }

    /// <summary>
    /// Like <see cref="TryDefer"/>, but <paramref name="listener"/> is told after every other
    /// listener of the batch (a lone write's device write, after the reply it let go). One such
    /// listener per batch: false if another holds the place.
    /// </summary>
    public static bool TryDeferLast(ICompletionBatchListener listener)
    {
        if (!t_open || t_last != null)
        {
            return false;
        }
        t_last = listener;
        return true;
    }

    /// <summary>True while a batch is open on this thread.</summary>
    public static bool IsOpen => t_open;

    /// <summary>
    /// Opens a batch on this thread until the returned scope is disposed; inside a batch that is
    /// already open it does nothing (the outer one ends it). A batch must end before its thread
    /// is given up (an await that suspends): its listeners are per thread.
    /// </summary>
    public static Scope Begin() => new(TryOpen());

    /// <summary>Opens a batch on this thread; false (nothing done) if one is already open.</summary>
    public static bool TryOpen()
    {
        if (t_open)
        {
            return false;
        }
        t_open = true;
        return true;
    }

    /// <summary>
    /// Ends the batch a loop opened with <see cref="TryOpen"/>, if <paramref name="opened"/> says
    /// it did, and clears the flag: loops that hold a batch across iterations end it before each wait.
    /// </summary>
    public static void End(ref bool opened)
    {
        if (opened)
        {
            opened = false;
            Close();
        }
    }

    /// <summary>Ends the batch open on this thread (if any) and tells its listeners.</summary>
    public static void Close()
    {
        t_open = false;
        var listeners = t_listeners;
        if (listeners == null || listeners.Count == 0)
        {
            CallLast(null);
            return;
        }
        // The batch is closed first: what a listener's continuation completes now wakes at once.
        // A listener may open and close a batch of its own: take the list out while calling them.
        // Every listener is told even if one throws: one left out would wait for ever.
        t_listeners = null;
        Exception? failure = null;
        for (var i = 0; i < listeners.Count; i++)
        {
            try
            {
                listeners[i].OnBatchCompleted();
            }
            catch (Exception e)
            {
                failure ??= e;
            }
        }
        listeners.Clear();
        if (t_listeners == null)
        {
            t_listeners = listeners;
        }
        else
        {
            t_spare = listeners;
        }
        CallLast(failure);
    }

    private static void CallLast(Exception? failure)
    {
        var last = t_last;
        t_last = null;
        try
        {
            last?.OnBatchCompleted();
        }
        catch (Exception e)
        {
            failure ??= e;
        }
        if (failure != null)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(failure);
        }
    }

    /// <summary>Closes the batch <see cref="Begin"/> opened, also when completing threw.</summary>
    public readonly ref struct Scope(bool owner)
    {
        public void Dispose()
        {
            if (owner)
            {
                Close();
            }
        }
    }
}
