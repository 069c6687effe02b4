using Ballast.Engine.Async;
using Ballast.Engine.Volumes;

namespace Ballast.Engine.Tests.Async;

public class CompletionBatchTests
{
    private sealed class Listener : ICompletionBatchListener
    {
        public int Calls;

        public void OnBatchCompleted() => Calls++;
    }

    [Test]
    public void Outside_a_batch_nothing_is_deferred()
    {
        Assert.That(CompletionBatch.TryDefer(new Listener()), Is.False);
    }

    [Test]
    public void A_deferred_listener_is_told_once_when_the_batch_closes_and_a_later_one_is_not_deferred()
    {
        var a = new Listener();
        Assert.That(CompletionBatch.TryOpen(), Is.True);
        Assert.That(CompletionBatch.TryDefer(a), Is.True);
        Assert.That(a.Calls, Is.Zero);
        CompletionBatch.Close();
        Assert.That(a.Calls, Is.EqualTo(1));
        Assert.That(CompletionBatch.TryDefer(a), Is.False, "the batch is closed");
        Assert.That(CompletionBatch.TryOpen(), Is.True);
        CompletionBatch.Close();
        Assert.That(a.Calls, Is.EqualTo(1), "a closed batch forgets its listeners");
    }

    [Test]
    public void A_listener_deferred_several_times_to_one_batch_is_told_once()
    {
        var a = new Listener();
        using (CompletionBatch.Begin())
        {
            for (var i = 0; i < 3; i++)
            {
                Assert.That(CompletionBatch.TryDefer(a), Is.True);
            }
        }
        Assert.That(a.Calls, Is.EqualTo(1));
    }

    [Test]
    public void A_batch_begun_inside_an_open_one_leaves_the_ending_to_the_outer_one()
    {
        var a = new Listener();
        using (CompletionBatch.Begin())
        {
            using (CompletionBatch.Begin())
            {
                Assert.That(CompletionBatch.TryOpen(), Is.False, "a batch is open");
                Assert.That(CompletionBatch.TryDefer(a), Is.True);
            }
            Assert.That(CompletionBatch.IsOpen, Is.True, "the inner scope did not end the outer batch");
            Assert.That(a.Calls, Is.Zero);
        }
        Assert.That((CompletionBatch.IsOpen, a.Calls), Is.EqualTo((false, 1)));
    }

    [Test]
    public void A_listener_that_runs_a_batch_of_its_own_does_not_disturb_the_others()
    {
        var b = new Listener();
        var inner = new Listener();
        var a = new Nested(inner);
        Assert.That(CompletionBatch.TryOpen(), Is.True);
        Assert.That(CompletionBatch.TryDefer(a) && CompletionBatch.TryDefer(b), Is.True);
        CompletionBatch.Close();
        Assert.That((a.Calls, inner.Calls, b.Calls), Is.EqualTo((1, 1, 1)));
        Assert.That(CompletionBatch.TryDefer(b), Is.False);
    }

    [Test]
    public void Batches_run_by_listeners_allocate_nothing_once_warm()
    {
        // The appender writes what a receive loop queued inside that loop's batch end, and opens
        // its own batch there: once per log batch on the replica's hot path.
        var inner = new Listener();
        var a = new Nested(inner);
        var opened = 0;
        void Round()
        {
            opened += CompletionBatch.TryOpen() ? 1 : 0;
            CompletionBatch.TryDefer(a);
            CompletionBatch.Close();
        }
        Round();
        Round();
        var before = GC.GetAllocatedBytesForCurrentThread();
        for (var i = 0; i < 100; i++)
        {
            Round();
        }
        var allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.That(opened, Is.EqualTo(102));
        Assert.That(allocated, Is.Zero);
        Assert.That((a.Calls, inner.Calls), Is.EqualTo((102, 102)));
    }

    [Test]
    public void A_listener_that_throws_does_not_keep_the_others_from_being_told()
    {
        var before = new Listener();
        var after = new Listener();
        Assert.That(CompletionBatch.TryOpen(), Is.True);
        CompletionBatch.TryDefer(before);
        CompletionBatch.TryDefer(new Throwing());
        CompletionBatch.TryDefer(after);
        Assert.Throws<InvalidOperationException>(CompletionBatch.Close);
        Assert.That((before.Calls, after.Calls, CompletionBatch.IsOpen), Is.EqualTo((1, 1, false)));
    }

    private sealed class Throwing : ICompletionBatchListener
    {
        public void OnBatchCompleted() => throw new InvalidOperationException("listener failed");
    }

    private sealed class Nested(Listener inner) : ICompletionBatchListener
    {
        public int Calls;

        public void OnBatchCompleted()
        {
            Calls++;
            using (CompletionBatch.Begin())
            {
                CompletionBatch.TryDefer(inner);
            }
        }
    }

    [Test]
    public async Task Inline_write_completions_in_one_log_batch_are_all_done_before_the_batch_closes()
    {
        // 32 inline writes in flight: each continuation defers to the batch the appender is
        // completing; the listener sees every write of its batch already complete.
        var pool = await TestPools.OpenAsync(new FaultInjection.FaultStorage());
        try
        {
            var v = await pool.CreateVolumeAsync("v", 8 << 20);
            var listener = new CountingListener();
            var data = TestPools.Pattern(4, 4096);
            // Hold the appender until every write is queued, so that none completes before its
            // continuation is registered (it would then run on this thread, outside any batch).
            using var release = new ManualResetEventSlim();
            var held = pool.Appender.RunAtBoundaryAsync(() => release.Wait(TimeSpan.FromSeconds(30)));
            var writes = new Task[32];
            for (var i = 0; i < writes.Length; i++)
            {
                writes[i] = Continue(v.WriteAsync(i * 4096L, data, WriteFlags.CompleteInline), listener);
            }
            release.Set();
            await held;
            await Task.WhenAll(writes);
            // This continuation itself may run inline on the appender, before its batch closes:
            // leave that thread and let the batch end.
            await Task.Yield();
            SpinWait.SpinUntil(() => Volatile.Read(ref listener.Batches) > 0, TimeSpan.FromSeconds(10));
            Assert.Multiple(() =>
            {
                Assert.That(listener.Completed, Is.EqualTo(32));
                Assert.That(listener.Batches, Is.InRange(1, 32));
                Assert.That(listener.Deferred + listener.NotDeferred, Is.EqualTo(32));
                Assert.That(listener.NotDeferred, Is.Zero, "every continuation ran inside the appender's batch");
            });
        }
        finally
        {
            await pool.DisposeAsync();
        }
    }

    private static async Task Continue(ValueTask write, CountingListener listener)
    {
        await write.ConfigureAwait(false);
        listener.OnCompleted();
    }

    private sealed class CountingListener : ICompletionBatchListener
    {
        private readonly object _lock = new();
        private bool _pending;
        public int Completed, Deferred, NotDeferred, Batches;

        public void OnCompleted()
        {
            lock (_lock)
            {
                Completed++;
                if (_pending)
                {
                    Deferred++;
                    return;
                }
                if (CompletionBatch.TryDefer(this))
                {
                    _pending = true;
                    Deferred++;
                }
                else
                {
                    NotDeferred++;
                }
            }
        }

        public void OnBatchCompleted()
        {
            lock (_lock)
            {
                _pending = false;
                Batches++;
            }
        }
    }
}
