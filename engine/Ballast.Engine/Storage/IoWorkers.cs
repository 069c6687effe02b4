namespace Ballast.Engine.Storage;

/// <summary>
/// Dedicated threads that run blocking preads, so a queue depth of 32 reads does not starve the
/// .NET thread pool (which grows slowly when its threads block). Work items are pooled: a read
/// allocates nothing once warm.
/// </summary>
internal sealed class IoWorkers : IDisposable
{
    private readonly object _lock = new();
    private readonly Queue<ReadWork> _queue = new();
    private readonly Stack<ReadWork> _free = new();
    private readonly Thread[] _threads;
    private bool _stopping;

    public IoWorkers(int threads, string name)
    {
        _threads = new Thread[threads];
        for (var i = 0; i < threads; i++)
        {
            _threads[i] = new Thread(Run) { IsBackground = true, Name = $"{name}-io{i}" };
            _threads[i].Start();
        }
    }

    public ValueTask ReadAsync(IPoolStorage storage, long offset, Memory<byte> buffer, bool completeInline)
    {
        ReadWork w;
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_stopping, this);
            w = _free.Count > 0 ? _free.Pop() : new ReadWork(this);
            w.Prepare(storage, offset, buffer, completeInline);
            _queue.Enqueue(w);
            Monitor.Pulse(_lock);
        }
        return new ValueTask(w, w.Version);
    }

    private void Run()
    {
        while (true)
        {
            ReadWork w;
            lock (_lock)
            {
                while (_queue.Count == 0)
                {
                    if (_stopping)
                    {
                        return;
                    }
                    Monitor.Wait(_lock);
                }
                w = _queue.Dequeue();
            }
            w.Execute();
        }
    }

    private void Recycle(ReadWork w)
    {
        lock (_lock)
        {
            if (_free.Count < 1024)
            {
                _free.Push(w);
            }
        }
    }

    public void Dispose()
    {
        lock (_lock)
        {
            _stopping = true;
            Monitor.PulseAll(_lock);
        }
        foreach (var t in _threads)
        {
            // A continuation that runs inline on a worker may dispose the pool: do not join ourselves.
            if (t != Thread.CurrentThread)
            {
                t.Join();
            }
        }
    }

    private sealed class ReadWork(IoWorkers owner) : PooledRead
    {
        private IPoolStorage? _storage;

        public void Prepare(IPoolStorage storage, long offset, Memory<byte> buffer, bool completeInline)
        {
            Prepare(offset, buffer, completeInline);
            _storage = storage;
        }

        public void Execute()
        {
            try
            {
                _storage!.Read(Offset, Buffer.Span);
                Succeed();
            }
            catch (Exception e)
            {
                Fail(e);
            }
        }

        protected override void Recycle()
        {
            _storage = null;
            owner.Recycle(this);
        }
    }
}
