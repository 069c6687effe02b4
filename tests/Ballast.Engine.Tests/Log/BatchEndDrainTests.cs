using Ballast.Engine.Async;
using Ballast.Engine.Log;
using Ballast.Engine.Replication;
using Ballast.Engine.Tests.FaultInjection;
using Ballast.Engine.Volumes;

namespace Ballast.Engine.Tests.Log;

/// <summary>
/// A replica's receive loop submits every record one socket read brought inside one completion
/// batch. The appender thread is not woken for each: when the batch ends, the loop writes them
/// itself as one batch if the log is idle and the work is a plain append into the open segment,
/// and wakes the appender thread otherwise. Nothing may wait for a batch that another thread
/// holds open, and log order must stay LSN order.
/// </summary>
public class BatchEndDrainTests
{
    private static ReplicatedRecord Rec(long lsn, long lba, int blocks = 1) => new(RecordKind.Data, lsn, 0, lba, blocks, false);

    /// <summary>Creates the volume, then waits until its creation no longer holds the log (an idle log is where draining starts).</summary>
    private static async Task<EngineVolume> IdleVolumeAsync(Pool pool, string name)
    {
        var v = (EngineVolume)await pool.CreateVolumeAsync(name, 8 << 20);
        Assert.That(SpinWait.SpinUntil(() => pool.Appender.IsIdle, 5000), Is.True);
        return v;
    }

    /// <summary>
    /// Runs <paramref name="submit"/> inside a completion batch on a thread of its own (a test's
    /// continuation may run inside the engine's batches), ends the batch, and returns what
    /// <paramref name="submit"/> returned and <paramref name="afterEnd"/> saw right after it.
    /// </summary>
    private static Task<(T Submitted, bool AfterEnd)> InBatchAsync<T>(Func<T> submit, Func<T, bool> afterEnd) =>
        Task.Factory.StartNew(() =>
        {
            var opened = CompletionBatch.TryOpen();
            Assert.That(opened, Is.True, "a new thread has no batch open");
            T submitted;
            try
            {
                submitted = submit();
            }
            finally
            {
                CompletionBatch.End(ref opened);
            }
            return (submitted, afterEnd(submitted));
        }, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);

    [Test]
    public async Task Records_queued_in_a_batch_are_written_as_one_batch_on_the_submitting_thread_when_it_ends()
    {
        var storage = new FaultStorage();
        await using var pool = await TestPools.OpenAsync(storage);
        var v = await IdleVolumeAsync(pool, "v");
        var inlineBefore = pool.Appender.InlineBatches;
        var batchesBefore = pool.Appender.Batches;
        var ((writes, flush, completedInBatch), allDoneAtEnd) = await InBatchAsync(() =>
        {
            var ws = new ValueTask[8];
            for (var i = 0; i < ws.Length; i++)
            {
                ws[i] = v.ApplyReplicatedAsync(Rec(i + 1, i), TestPools.Pattern(i, 4096), completeInline: true);
            }
            var f = v.FlushInlineAtBatchEndAsync();
            Thread.Sleep(50);
            return (ws, f, ws.Count(w => w.IsCompleted));
        }, s => s.ws.All(w => w.IsCompleted));
        Assert.That(completedInBatch, Is.Zero, "a record was written before its submitter's batch ended");
        // Written by that thread inside End: complete before it returned.
        Assert.That(allDoneAtEnd, Is.True, "the records were left to the appender thread");
        Assert.That(pool.Appender.InlineBatches - inlineBefore, Is.EqualTo(1));
        Assert.That(pool.Appender.Batches - batchesBefore, Is.EqualTo(1), "eight records and a flush should make one batch");
        foreach (var w in writes)
        {
            await w;
        }
        await flush.AsTask().WaitAsync(TimeSpan.FromSeconds(10));
        var back = new byte[4096];
        for (var i = 0; i < writes.Length; i++)
        {
            await v.ReadAsync(i * 4096L, back);
            Assert.That(back, Is.EqualTo(TestPools.Pattern(i, 4096)), $"block {i}");
        }

        // The flush made them durable: a crash now keeps all eight.
        var image = storage.CrashImage(new Random(1), CrashMode.Subset);
        await using var reopened = await Pool.OpenAsync(TestPools.Options(image));
        Assert.That(reopened.TryOpenVolume("v", out var again), Is.True);
        for (var i = 0; i < writes.Length; i++)
        {
            await again!.ReadAsync(i * 4096L, back);
            Assert.That(back, Is.EqualTo(TestPools.Pattern(i, 4096)), $"block {i} after the crash");
        }
    }

    [Test]
    public async Task A_write_from_another_thread_wakes_the_appender_for_records_waiting_on_an_open_batch()
    {
        var storage = new FaultStorage();
        await using var pool = await TestPools.OpenAsync(storage);
        IBlockVolume other = await pool.CreateVolumeAsync("o", 8 << 20);
        var replica = await IdleVolumeAsync(pool, "r");
        var ((waiting, otherDone, waitingDone), _) = await InBatchAsync(() =>
        {
            var w = replica.ApplyReplicatedAsync(Rec(1, 0), TestPools.Pattern(1, 4096), completeInline: true);
            // Another client's write must not wait for this thread's batch; it takes the waiting record with it.
            var o = Task.Run(() => other.WriteAsync(0, TestPools.Pattern(2, 4096), WriteFlags.None).AsTask()).Wait(TimeSpan.FromSeconds(10));
            return (w, o, SpinWait.SpinUntil(() => w.IsCompleted, 10_000));
        }, _ => true);
        Assert.That(otherDone, Is.True, "the other write waited for the batch held open on another thread");
        Assert.That(waitingDone, Is.True, "the record waited for its batch although the appender thread had been woken");
        await waiting;
        var back = new byte[4096];
        await replica.ReadAsync(0, back);
        Assert.That(back, Is.EqualTo(TestPools.Pattern(1, 4096)));
    }

    [Test]
    public async Task Near_a_full_pool_the_batch_end_wakes_the_appender_thread_instead()
    {
        // There records may go into recycled holes, with an fdatasync of their own: not for a socket thread.
        var storage = new FaultStorage();
        await using var pool = await TestPools.OpenAsync(storage);
        var v = await IdleVolumeAsync(pool, "v");
        pool.Appender.RecycleBelow = int.MaxValue;
        var before = pool.Appender.InlineBatches;
        var (writes, _) = await InBatchAsync(
            () => Enumerable.Range(0, 4).Select(i => v.ApplyReplicatedAsync(Rec(i + 1, i), TestPools.Pattern(i, 4096)).AsTask()).ToList(),
            _ => true);
        await Task.WhenAll(writes).WaitAsync(TimeSpan.FromSeconds(10));
        Assert.That(pool.Appender.InlineBatches - before, Is.Zero);
    }

    [Test]
    public async Task More_than_fits_one_batch_goes_to_the_appender_thread_in_lsn_order()
    {
        var storage = new FaultStorage();
        // 64 KiB batches: 24 records of 4 KiB do not fit one.
        await using var pool = await Pool.OpenAsync(TestPools.Options(storage, maxBatchBytes: 64 << 10));
        var v = await IdleVolumeAsync(pool, "v");
        var before = pool.Appender.InlineBatches;
        // The same block again and again: only the last LSN's data may remain, before and after replay.
        var (writes, _) = await InBatchAsync(
            () => Enumerable.Range(0, 24).Select(i => v.ApplyReplicatedAsync(Rec(i + 1, 5), TestPools.Pattern(100 + i, 4096)).AsTask()).ToList(),
            _ => true);
        await Task.WhenAll(writes).WaitAsync(TimeSpan.FromSeconds(10));
        Assert.That(pool.Appender.InlineBatches - before, Is.Zero);
        await v.FlushAsync();
        var back = new byte[4096];
        await v.ReadAsync(5 * 4096L, back);
        Assert.That(back, Is.EqualTo(TestPools.Pattern(123, 4096)));
        var image = storage.CleanImage();
        await using var reopened = await Pool.OpenAsync(TestPools.Options(image, maxBatchBytes: 64 << 10));
        Assert.That(reopened.TryOpenVolume("v", out var again), Is.True);
        await again!.ReadAsync(5 * 4096L, back);
        Assert.That(back, Is.EqualTo(TestPools.Pattern(123, 4096)), "after replay");
    }

    [Test]
    public async Task A_lone_record_is_answered_before_its_device_write_which_follows_at_the_end_of_the_drain()
    {
        // As a lone client write on the primary: the replica's answer leaves first, the device
        // write follows it, and the primary's FLUSH (queued behind the log) covers it.
        var storage = new FaultStorage();
        var pool = await TestPools.OpenAsync(storage);
        var v = await IdleVolumeAsync(pool, "v");
        var events = new List<string>();
        storage.BeforeWrite = _ =>
        {
            lock (events)
            {
                events.Add("device write");
            }
        };
        var early = pool.Appender.EarlyAcks;
        var data = TestPools.Pattern(9, 4096);
        var (write, _) = await InBatchAsync(() =>
        {
            var t = v.ApplyReplicatedAsync(Rec(1, 3), data, completeInline: true).AsTask();
            t.ContinueWith(_ =>
            {
                lock (events)
                {
                    events.Add("answered");
                }
            }, TaskContinuationOptions.ExecuteSynchronously);
            return t;
        }, _ => true);
        await write.WaitAsync(TimeSpan.FromSeconds(10));
        lock (events)
        {
            Assert.That(events, Is.EqualTo(new[] { "answered", "device write" }));
        }
        Assert.That(pool.Appender.EarlyAcks - early, Is.EqualTo(1));
        storage.BeforeWrite = null;
        await v.FlushAsync();
        var image = storage.CrashImage(new Random(2), CrashMode.Subset);
        await pool.AbandonAsync();
        await using var reopened = await Pool.OpenAsync(TestPools.Options(image));
        var back = new byte[4096];
        await reopened.OpenVolume("v").ReadAsync(3 * 4096, back);
        Assert.That(back, Is.EqualTo(data));
    }
}
