using System.Runtime.CompilerServices;
using System.Threading.Tasks.Sources;
using Ballast.Engine.Async;

namespace Ballast.Engine.Tests.Async;

public class PooledValueTaskBuilderTests
{
    /// <summary>A reusable awaitable completed by a dedicated thread, so awaiting it allocates nothing itself.</summary>
    private sealed class Completer : IValueTaskSource, IDisposable
    {
        private ManualResetValueTaskSourceCore<bool> _core;
        private readonly SemaphoreSlim _go = new(0);
        private readonly Thread _thread;
        private volatile bool _stop;

        public Completer()
        {
            _thread = new Thread(() =>
            {
                while (true)
                {
                    _go.Wait();
                    if (_stop)
                    {
                        return;
                    }
                    _core.SetResult(true);
                }
            }) { IsBackground = true };
            _thread.Start();
        }

        public ValueTask Next()
        {
            _core.Reset();
            var t = new ValueTask(this, _core.Version);
            _go.Release();
            return t;
        }

        public void GetResult(short token) => _core.GetResult(token);

        public ValueTaskSourceStatus GetStatus(short token) => _core.GetStatus(token);

        public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
            _core.OnCompleted(continuation, state, token, flags);

        public void Dispose()
        {
            _stop = true;
            _go.Release();
            // Continuations run inline on the completing thread, so the test may end on it.
            if (Thread.CurrentThread != _thread)
            {
                _thread.Join();
                _go.Dispose();
            }
        }
    }

    private static readonly AsyncLocal<int> Flowing = new();

    [AsyncMethodBuilder(typeof(PooledValueTaskBuilder))]
    private static async ValueTask AddAfterAsync(Completer? c, int[] sum, int value, bool fail)
    {
        if (c != null)
        {
            await c.Next();
        }
        if (fail)
        {
            throw new InvalidDataException("failed " + value);
        }
        sum[0] += value + Flowing.Value;
    }

    [Test]
    public async Task Completes_synchronously_and_after_suspending_with_results_and_exceptions()
    {
        using var c = new Completer();
        var sum = new int[1];
        await AddAfterAsync(null, sum, 1, fail: false);
        await AddAfterAsync(c, sum, 2, fail: false);
        Assert.That(sum[0], Is.EqualTo(3));
        Assert.ThrowsAsync<InvalidDataException>(async () => await AddAfterAsync(null, sum, 4, fail: true));
        Assert.ThrowsAsync<InvalidDataException>(async () => await AddAfterAsync(c, sum, 8, fail: true));
        // The pool's boxes are reset between uses: later calls see none of the failures.
        for (var i = 0; i < 100; i++)
        {
            await AddAfterAsync(c, sum, 1, fail: false);
        }
        Assert.That(sum[0], Is.EqualTo(103));
    }

    [Test]
    public async Task Async_locals_flow_across_the_await_like_any_async_method()
    {
        using var c = new Completer();
        var sum = new int[1];
        Flowing.Value = 1000;
        await AddAfterAsync(c, sum, 1, fail: false);
        Flowing.Value = 0;
        Assert.That(sum[0], Is.EqualTo(1001));
    }

    [Test]
    public async Task Many_in_flight_at_once_each_complete_once()
    {
        var sum = new int[1];
        var tasks = new Task[64];
        for (var round = 0; round < 50; round++)
        {
            for (var i = 0; i < tasks.Length; i++)
            {
                tasks[i] = YieldThenAddAsync(sum).AsTask();
            }
            await Task.WhenAll(tasks);
        }
        Assert.That(Volatile.Read(ref sum[0]), Is.EqualTo(64 * 50));
    }

    [AsyncMethodBuilder(typeof(PooledValueTaskBuilder))]
    private static async ValueTask YieldThenAddAsync(int[] sum)
    {
        await Task.Yield();
        Interlocked.Increment(ref sum[0]);
    }

    [Test]
    public async Task A_method_that_suspends_allocates_nothing_once_the_pool_is_warm()
    {
        using var c = new Completer();
        var sum = new int[1];
        for (var i = 0; i < 1000; i++)
        {
            await AddAfterAsync(c, sum, 1, fail: false);
        }
        var before = GC.GetTotalAllocatedBytes(precise: true);
        for (var i = 0; i < 10_000; i++)
        {
            await AddAfterAsync(c, sum, 1, fail: false);
        }
        var perCall = (GC.GetTotalAllocatedBytes(precise: true) - before) / 10_000.0;
        // The runtime's own async infrastructure (the test's caller) may allocate a little; a box is ~100 bytes.
        Assert.That(perCall, Is.LessThan(16), $"{perCall:0.0} bytes per call");
    }
}
