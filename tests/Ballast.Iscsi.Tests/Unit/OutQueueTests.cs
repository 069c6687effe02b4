using Ballast.Engine.Async;
using Ballast.Iscsi.Transport;

namespace Ballast.Iscsi.Tests.Unit;

/// <summary>
/// The connection's send queue: a response queued inside an engine thread's completion batch
/// wakes the send loop once, on that thread, when the batch ends; anything queued outside a
/// batch wakes it on the thread pool, never on the writer's own thread (writers may hold locks).
/// </summary>
public class OutQueueTests
{
    private static OutItem Item(uint n) => new(OutKind.ReadyToTransfer, null, null, n, 0, 0, 0);

    /// <summary>A reader like the send loop: records the thread it woke on and what it read.</summary>
    private static async Task<(List<uint> Read, List<int> Threads)> ReadAllAsync(OutQueue q)
    {
        var read = new List<uint>();
        var threads = new List<int>();
        while (await q.WaitToReadAsync())
        {
            threads.Add(Environment.CurrentManagedThreadId);
            while (q.TryRead(out var item))
            {
                read.Add(item.A);
            }
        }
        return (read, threads);
    }

    private static Task OnOwnThread(Action body) =>
        Task.Factory.StartNew(body, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);

    [Test]
    public async Task Items_queued_in_a_batch_wake_the_reader_once_on_that_thread_when_it_ends()
    {
        var q = new OutQueue();
        var reader = ReadAllAsync(q);
        var batchThread = 0;
        var wokeBeforeEnd = false;
        await OnOwnThread(() =>
        {
            batchThread = Environment.CurrentManagedThreadId;
            var opened = CompletionBatch.TryOpen();
            Assert.That(opened, Is.True);
            for (uint i = 0; i < 5; i++)
            {
                Assert.That(q.TryWrite(Item(i)), Is.True);
            }
            Thread.Sleep(50);
            wokeBeforeEnd = reader.IsCompleted || q.TryRead(out _) == false;
            CompletionBatch.End(ref opened);
        });
        q.TryComplete();
        var (read, threads) = await reader.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.That(read, Is.EqualTo(new uint[] { 1, 2, 3, 4 }), "the test took item 0 itself to see that nothing had been read");
        Assert.That(wokeBeforeEnd, Is.False);
        Assert.That(threads[0], Is.EqualTo(batchThread), "the reader ran on the thread that ended the batch");
    }

    [Test]
    public async Task Items_queued_outside_a_batch_wake_the_reader_on_another_thread()
    {
        var q = new OutQueue();
        var reader = ReadAllAsync(q);
        var writerThread = 0;
        await OnOwnThread(() =>
        {
            writerThread = Environment.CurrentManagedThreadId;
            lock (q)
            {
                // A writer holding a lock must not find the send loop running inside TryWrite.
                Assert.That(q.TryWrite(Item(7)), Is.True);
                Thread.Sleep(50);
            }
        });
        q.TryComplete();
        var (read, threads) = await reader.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.That(read, Is.EqualTo(new uint[] { 7 }));
        Assert.That(threads, Has.None.EqualTo(writerThread));
    }

    [Test]
    public async Task After_completion_the_reader_gets_what_was_queued_and_writes_are_refused()
    {
        var q = new OutQueue();
        Assert.That(q.TryWrite(Item(1)), Is.True);
        Assert.That(q.TryWrite(Item(2)), Is.True);
        q.TryComplete();
        Assert.That(q.TryWrite(Item(3)), Is.False, "nothing would ever send it: the caller retires it");
        var (read, _) = await ReadAllAsync(q).WaitAsync(TimeSpan.FromSeconds(10));
        Assert.That(read, Is.EqualTo(new uint[] { 1, 2 }));
    }

    [Test]
    public async Task Many_writers_in_and_out_of_batches_lose_no_wake_up()
    {
        var q = new OutQueue();
        var reader = ReadAllAsync(q);
        var writers = Enumerable.Range(0, 4).Select(w => OnOwnThread(() =>
        {
            for (var i = 0; i < 2000; i++)
            {
                var opened = w % 2 == 0 && CompletionBatch.TryOpen();
                q.TryWrite(Item((uint)(w * 10_000 + i)));
                CompletionBatch.End(ref opened);
                if (i % 100 == 0)
                {
                    Thread.Yield();
                }
            }
        })).ToArray();
        await Task.WhenAll(writers).WaitAsync(TimeSpan.FromSeconds(30));
        q.TryComplete();
        var (read, _) = await reader.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.That(read, Has.Count.EqualTo(8000));
        for (var w = 0; w < 4; w++)
        {
            var mine = read.Where(x => x / 10_000 == w).ToList();
            Assert.That(mine, Is.Ordered, $"writer {w}'s items kept their order");
        }
    }
}
