using System.Diagnostics;
using Ballast.Engine.Storage;
using Ballast.Engine.Volumes;

namespace Ballast.Engine.Log;

/// <summary>
/// Runs fdatasync on its own thread so the appender writes the next batch while the previous
/// one is being made durable. A request handed over after its batch was written completes
/// after a sync that started later, so its data is covered. A flush when nothing was written
/// since the last sync completes without a syscall.
/// </summary>
internal sealed class Syncer : IDisposable
{
    private readonly IPoolStorage _storage;
    private readonly object _lock = new();
    private readonly Thread _thread;
    private List<AppendRequest> _pending = [];
    private List<AppendRequest> _taken = [];
    private long _writeGen;
    private long _syncedGen;
    private bool _stopping;
    private Exception? _failure;

    public Syncer(IPoolStorage storage)
    {
        _storage = storage;
        _thread = new Thread(Run) { IsBackground = true, Name = "ballast-sync" };
    }

    public long Syncs;
    public long SyncTicks;

    /// <summary>Set when an fdatasync failed: nothing written since can be trusted durable.</summary>
    public Exception? Failure => Volatile.Read(ref _failure);

    public void Start() => _thread.Start();

    /// <summary>
    /// Another fdatasync of the pool's file failed (the appender syncs data written into holes):
    /// the error may have been the one meant for pages this thread's next sync covers, so no
    /// later sync may complete a request.
    /// </summary>
    public void Fail(Exception e) => Interlocked.CompareExchange(ref _failure, e, null);

    /// <summary>The appender wrote to the device.</summary>
    public void Wrote() => Interlocked.Increment(ref _writeGen);

    /// <summary>Hands over requests that complete once durable.</summary>
    public void Enqueue(List<AppendRequest> items)
    {
        lock (_lock)
        {
            var wasEmpty = _pending.Count == 0;
            _pending.AddRange(items);
            if (wasEmpty)
            {
                Monitor.Pulse(_lock);
            }
        }
    }

    private void Run()
    {
        while (true)
        {
            lock (_lock)
            {
                while (_pending.Count == 0)
                {
                    if (_stopping)
                    {
                        return;
                    }
                    Monitor.Wait(_lock);
                }
                (_pending, _taken) = (_taken, _pending);
            }
            var error = Failure;
            var target = Volatile.Read(ref _writeGen);
            if (error == null && target > _syncedGen)
            {
                var from = Stopwatch.GetTimestamp();
                try
                {
                    _storage.Sync();
                    _syncedGen = target;
                    Syncs++;
                }
                catch (Exception e)
                {
                    error = e;
                    Interlocked.CompareExchange(ref _failure, e, null);
                }
                SyncTicks += Stopwatch.GetTimestamp() - from;
            }
            using (Async.CompletionBatch.Begin())
            {
                foreach (var r in _taken)
                {
                    if (error == null)
                    {
                        r.Complete();
                    }
                    else
                    {
                        r.Fail(new BlockVolumeException(BlockError.Io, $"flush failed: {error.Message}", error));
                    }
                }
            }
            _taken.Clear();
        }
    }

    public void Dispose()
    {
        lock (_lock)
        {
            _stopping = true;
            Monitor.Pulse(_lock);
        }
        if (_thread.IsAlive)
        {
            _thread.Join();
        }
    }
}
