using Ballast.Engine.Tests.FaultInjection;
using Ballast.Engine.Volumes;

namespace Ballast.Engine.Tests.Log;

/// <summary>
/// A small client write whose caller has nothing else in flight (WriteFlags.Alone) and that
/// finds the log idle is written by its own thread; anything else, and anything arriving while
/// that write is on the device, goes through the appender thread.
/// Log order must stay LSN order across the hand-over, or replay would resurrect old data.
/// </summary>
public class InlineWriteTests
{
    [Test]
    public async Task A_small_write_to_an_idle_log_completes_before_the_call_returns()
    {
        var storage = new FaultStorage();
        await using var pool = await TestPools.OpenAsync(storage);
        var v = await pool.CreateVolumeAsync("v", 8 << 20);
        var data = TestPools.Pattern(1, 64 << 10);
        // The volume's creation may still hold the appender thread for a moment.
        Assert.That(SpinWait.SpinUntil(() => pool.Appender.IsIdle, 5000), Is.True);
        var before = pool.Appender.InlineBatches;
        for (var i = 0; i < 20; i++)
        {
            // Sizes up to the 64 KiB limit, the last one exactly at it (all within the open 1 MiB segment).
            var length = i == 19 ? 64 << 10 : 4096 * (1 + i % 4);
            var write = v.WriteAsync(i * (64L << 10), data.AsMemory(0, length), WriteFlags.Alone);
            Assert.That(write.IsCompleted, Is.True, $"write {i} ({length} bytes) was left to the appender thread");
            await write;
        }
        Assert.That(pool.Appender.InlineBatches - before, Is.EqualTo(20));
        var back = new byte[data.Length];
        await v.ReadAsync(19 * (64L << 10), back);
        Assert.That(back, Is.EqualTo(data));
    }

    [Test]
    public async Task A_write_not_alone_goes_through_the_appender_thread()
    {
        var storage = new FaultStorage();
        await using var pool = await TestPools.OpenAsync(storage);
        var v = await pool.CreateVolumeAsync("v", 8 << 20);
        Assert.That(await InlineBatchesDuringAsync(pool, v, 20, 4096, WriteFlags.CompleteInline), Is.Zero);
    }

    [Test]
    public async Task A_write_to_a_replicated_volume_goes_through_the_appender_thread()
    {
        // Its forwarded record leaves when the caller's batch ends: a local write on the caller's
        // thread would come first and add its time to the replicas' round trip.
        var storage = new FaultStorage();
        await using var pool = await TestPools.OpenAsync(storage);
        var v = (EngineVolume)await pool.CreateVolumeAsync("v", 8 << 20);
        var forwarder = new CountingForwarder();
        v.AttachForwarder(forwarder);
        Assert.That(await InlineBatchesDuringAsync(pool, v, 20, 4096, WriteFlags.Alone), Is.Zero);
        Assert.That(forwarder.Forwarded, Is.EqualTo(20));
    }

    private sealed class CountingForwarder : Ballast.Engine.Replication.IRecordForwarder
    {
        public int Forwarded;

        public ValueTask Forward(in Ballast.Engine.Replication.ReplicatedRecord record, ReadOnlyMemory<byte> payload, bool completeInline)
        {
            Forwarded++;
            return ValueTask.CompletedTask;
        }

        public ValueTask FlushAsync(bool completeInline, CancellationToken ct) => ValueTask.CompletedTask;
    }

    [Test]
    public async Task Near_a_full_pool_a_lone_write_goes_through_the_appender_thread()
    {
        // There it may go into recycled holes, with an fdatasync of its own: not for a socket thread.
        var storage = new FaultStorage();
        await using var pool = await TestPools.OpenAsync(storage);
        var v = await pool.CreateVolumeAsync("v", 8 << 20);
        pool.Appender.RecycleBelow = int.MaxValue;
        Assert.That(await InlineBatchesDuringAsync(pool, v, 10, 4096, WriteFlags.Alone), Is.Zero);
    }

    [Test]
    public async Task A_write_larger_than_the_limit_goes_through_the_appender_thread()
    {
        var storage = new FaultStorage();
        await using var pool = await TestPools.OpenAsync(storage);
        var v = await pool.CreateVolumeAsync("v", 8 << 20);
        Assert.That(await InlineBatchesDuringAsync(pool, v, 10, (64 << 10) + 4096, WriteFlags.CompleteInline | WriteFlags.Alone), Is.Zero);
    }

    /// <summary>
    /// Waits for an idle log (the volume's creation may still hold the appender thread), then
    /// writes <paramref name="writes"/> blocks of <paramref name="size"/> bytes one after the
    /// other; returns the batches written on this thread meanwhile.
    /// </summary>
    private static async Task<long> InlineBatchesDuringAsync(Pool pool, IBlockVolume v, int writes, int size, WriteFlags flags)
    {
        Assert.That(SpinWait.SpinUntil(() => pool.Appender.IsIdle, 5000), Is.True);
        var data = TestPools.Pattern(size, size);
        var before = pool.Appender.InlineBatches;
        for (var i = 0; i < writes; i++)
        {
            await v.WriteAsync(i * (long)size, data, flags);
        }
        return pool.Appender.InlineBatches - before;
    }

    [Test]
    public async Task Writes_arriving_while_an_inline_write_is_on_the_device_queue_and_keep_their_order()
    {
        var storage = new FaultStorage();
        var pool = await TestPools.OpenAsync(storage);
        var v = await pool.CreateVolumeAsync("v", 8 << 20);
        var first = TestPools.Pattern(3, 4096);
        var second = TestPools.Pattern(4, 4096);
        using var entered = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        var holdThread = -1;
        storage.BeforeWrite = _ =>
        {
            if (Environment.CurrentManagedThreadId == Volatile.Read(ref holdThread))
            {
                entered.Set();
                release.Wait(TimeSpan.FromSeconds(10));
            }
        };
        var before = pool.Appender.InlineBatches;
        // The first write holds the log on its own thread (inside its device write)...
        var firstDone = Task.Factory.StartNew(() =>
        {
            Volatile.Write(ref holdThread, Environment.CurrentManagedThreadId);
            v.WriteAsync(0, first, WriteFlags.Alone).AsTask().Wait();
            return Thread.CurrentThread.ManagedThreadId;
        }, TaskCreationOptions.LongRunning);
        Assert.That(entered.Wait(TimeSpan.FromSeconds(10)), Is.True, "the first write did not reach the device on its own thread");
        // ...so the second, to the same block, is queued for the appender thread.
        var secondThread = Task.Run(async () =>
        {
            await v.WriteAsync(0, second, WriteFlags.CompleteInline | WriteFlags.Alone);
            return Thread.CurrentThread.Name;
        });
        await Task.Delay(100);
        Assert.That(secondThread.IsCompleted, Is.False, "the second write finished while the log was held by the first");
        release.Set();
        await firstDone.WaitAsync(TimeSpan.FromSeconds(10));
        // Hangs (then fails) if the inline writer did not wake the appender thread for the queued write.
        Assert.That(await secondThread.WaitAsync(TimeSpan.FromSeconds(10)), Is.EqualTo("ballast-appender"));
        Assert.That(pool.Appender.InlineBatches - before, Is.EqualTo(1));
        storage.BeforeWrite = null;
        var back = new byte[4096];
        await v.ReadAsync(0, back);
        Assert.That(back, Is.EqualTo(second), "the earlier write won");
        await v.FlushAsync();

        var image = storage.CleanImage();
        await pool.AbandonAsync();
        await using var reopened = await Pool.OpenAsync(TestPools.Options(image));
        Assert.That(reopened.TryOpenVolume("v", out var again), Is.True);
        await again!.ReadAsync(0, back);
        Assert.That(back, Is.EqualTo(second), "after replay the earlier write won");
    }
}
