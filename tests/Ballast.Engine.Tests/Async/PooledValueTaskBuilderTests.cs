using System.Runtime.CompilerServices;
using Ballast.Engine.Async;

namespace Ballast.Engine.Tests.Async;

public class PooledValueTaskBuilderTests
{
    private static readonly AsyncLocal<int> Flowing = new();

    [AsyncMethodBuilder(typeof(PooledValueTaskBuilder))]
    private static async ValueTask AddAfterAsync(bool suspend, int[] sum, int value, bool fail)
    {
        if (suspend)
        {
            // Resumes on a thread-pool thread, like an I/O completion.
            await Task.Yield();
        }
        if (fail)
        {
            throw new InvalidDataException("failed " + value);
        }
        Interlocked.Add(ref sum[0], value + Flowing.Value);
    }

    // The same method with the runtime's default builder, which allocates a box per suspension.
    private static async ValueTask AddAfterUnpooledAsync(int[] sum, int value)
    {
        await Task.Yield();
        Interlocked.Add(ref sum[0], value);
    }

    [Test]
    public async Task Completes_synchronously_and_after_suspending_with_results_and_exceptions()
    {
        var sum = new int[1];
        await AddAfterAsync(false, sum, 1, fail: false);
        await AddAfterAsync(true, sum, 2, fail: false);
        Assert.That(sum[0], Is.EqualTo(3));
        Assert.ThrowsAsync<InvalidDataException>(async () => await AddAfterAsync(false, sum, 4, fail: true));
        Assert.ThrowsAsync<InvalidDataException>(async () => await AddAfterAsync(true, sum, 8, fail: true));
        // The pool's boxes are reset between uses: later calls see none of the failures.
        for (var i = 0; i < 100; i++)
        {
            await AddAfterAsync(true, sum, 1, fail: false);
        }
        Assert.That(sum[0], Is.EqualTo(103));
    }

    [Test]
    public async Task Async_locals_flow_across_the_await_like_any_async_method()
    {
        var sum = new int[1];
        Flowing.Value = 1000;
        await AddAfterAsync(true, sum, 1, fail: false);
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
                tasks[i] = AddAfterAsync(true, sum, 1, fail: false).AsTask();
            }
            await Task.WhenAll(tasks);
        }
        Assert.That(Volatile.Read(ref sum[0]), Is.EqualTo(64 * 50));
    }

    [Test]
    [NonParallelizable] // The process-wide allocation counter must not see other tests.
    public async Task A_suspending_method_allocates_far_less_than_with_the_default_builder()
    {
        var sum = new int[1];
        const int Calls = 20_000;
        for (var i = 0; i < 1000; i++)
        {
            await AddAfterAsync(true, sum, 1, fail: false);
            await AddAfterUnpooledAsync(sum, 1);
        }
        // The counter is process-wide: threads left from other tests can only add to a round,
        // so each builder's figure is its best of three interleaved rounds.
        double pooled = double.MaxValue, unpooled = double.MaxValue;
        for (var round = 0; round < 3; round++)
        {
            var before = GC.GetTotalAllocatedBytes(precise: true);
            for (var i = 0; i < Calls; i++)
            {
                await AddAfterAsync(true, sum, 1, fail: false);
            }
            pooled = Math.Min(pooled, (GC.GetTotalAllocatedBytes(precise: true) - before) / (double)Calls);
            before = GC.GetTotalAllocatedBytes(precise: true);
            for (var i = 0; i < Calls; i++)
            {
                await AddAfterUnpooledAsync(sum, 1);
            }
            unpooled = Math.Min(unpooled, (GC.GetTotalAllocatedBytes(precise: true) - before) / (double)Calls);
        }
        TestContext.Out.WriteLine($"bytes per call: pooled {pooled:0.0}, default builder {unpooled:0.0}");
        // Both pay the same for Task.Yield's resumption (a thread-pool work item, 32 bytes here
        // for the pooled builder's delegate); the default builder also allocates its box (over 100).
        Assert.That(unpooled - pooled, Is.GreaterThan(48), $"pooled {pooled:0.0} vs default {unpooled:0.0} bytes per call");
    }
}
