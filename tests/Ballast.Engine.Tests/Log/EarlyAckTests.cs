using Ballast.Engine.Async;
using Ballast.Engine.Tests.FaultInjection;
using Ballast.Engine.Volumes;

namespace Ballast.Engine.Tests.Log;

/// <summary>
/// A lone write without FUA, submitted inside a completion batch (an NBD receive loop), is
/// acknowledged before its device write, which runs when that batch ends, after the batch's
/// other listeners (the reply). Meanwhile reads see it and a FLUSH waits for it; if the device
/// write fails, the next FLUSH fails and nothing serves the unwritten blocks.
/// </summary>
public class EarlyAckTests
{
    private sealed class Recorder(List<string> events, string name) : ICompletionBatchListener
    {
        public void OnBatchCompleted()
        {
            lock (events)
            {
                events.Add(name);
            }
        }
    }

    private static async Task<(Pool Pool, IBlockVolume Volume)> OpenAsync(FaultStorage storage, bool ackEarly = true)
    {
        var pool = await Pool.OpenAsync(TestPools.Options(storage, ackBeforeDeviceWrite: ackEarly));
        var v = await pool.CreateVolumeAsync("v", 8 << 20);
        await v.WriteAsync(0, TestPools.Pattern(1, 8192), WriteFlags.None);
        await v.FlushAsync();
        Assert.That(SpinWait.SpinUntil(() => pool.Appender.IsIdle, 5000), Is.True);
        return (pool, v);
    }

    /// <summary>Runs <paramref name="body"/> on a thread of its own inside one completion batch, then ends the batch.</summary>
    private static Task InBatchAsync(Action body) => Task.Factory.StartNew(() =>
    {
        using (CompletionBatch.Begin())
        {
            body();
        }
    }, TaskCreationOptions.LongRunning);

    [Test]
    public async Task The_write_completes_first_reads_see_it_a_flush_waits_and_the_device_write_follows_the_reply()
    {
        var storage = new FaultStorage();
        var (pool, v) = await OpenAsync(storage);
        var data = TestPools.Pattern(2, 4096);
        var events = new List<string>();
        storage.BeforeWrite = _ =>
        {
            lock (events)
            {
                events.Add("device write");
            }
        };
        var early = pool.GetStats().EarlyAcks;
        Task? flush = null;
        byte[]? seen = null;
        await InBatchAsync(() =>
        {
            var write = v.WriteAsync(0, data, WriteFlags.Alone | WriteFlags.CompleteInline);
            Assert.That(write.IsCompleted, Is.True, "the write was acknowledged on the submitting thread");
            write.GetAwaiter().GetResult();
            // The reply's wake-up, deferred to this batch after the write was submitted.
            CompletionBatch.TryDefer(new Recorder(events, "reply"));
            lock (events)
            {
                Assert.That(events, Is.Empty, "no device write before the batch ends");
            }
            // Another connection reads the block while the device does not hold it yet.
            seen = Task.Run(async () =>
            {
                var b = new byte[4096];
                await v.ReadAsync(0, b);
                return b;
            }).Result;
            flush = Task.Run(async () => await v.FlushAsync());
            Assert.That(flush.Wait(200), Is.False, "a FLUSH completed before the acknowledged write reached the device");
        });
        Assert.That(seen, Is.EqualTo(data), "a read during the device write saw the acknowledged data");
        await flush!.WaitAsync(TimeSpan.FromSeconds(10));
        lock (events)
        {
            Assert.That(events.Take(2), Is.EqualTo(new[] { "reply", "device write" }));
        }
        Assert.That(pool.GetStats().EarlyAcks - early, Is.EqualTo(1));
        storage.BeforeWrite = null;

        // The FLUSH made it durable: a crash now keeps it.
        var image = storage.CrashImage(new Random(1), CrashMode.Prefix);
        await pool.AbandonAsync();
        await using var reopened = await Pool.OpenAsync(TestPools.Options(image));
        var back = new byte[4096];
        await reopened.OpenVolume("v").ReadAsync(0, back);
        Assert.That(back, Is.EqualTo(data));
    }

    [Test]
    public async Task Fua_writes_writes_outside_a_batch_and_a_pool_with_the_option_off_are_written_before_they_complete()
    {
        foreach (var (ackEarly, flags, inBatch) in new[]
                 {
                     (true, WriteFlags.Alone | WriteFlags.Fua, true),
                     (true, WriteFlags.Alone, false),
                     (false, WriteFlags.Alone, true),
                 })
        {
            var storage = new FaultStorage();
            var (pool, v) = await OpenAsync(storage, ackEarly);
            try
            {
                var early = pool.GetStats().EarlyAcks;
                var writes = storage.Writes;
                long writesAtCompletion = -1;
                void Write()
                {
                    // A FUA write completes on the sync thread: note the device writes when it does.
                    var w = v.WriteAsync(0, TestPools.Pattern(3, 4096), flags).AsTask();
                    w.ContinueWith(_ => Volatile.Write(ref writesAtCompletion, storage.Writes), TaskContinuationOptions.ExecuteSynchronously).Wait();
                    w.GetAwaiter().GetResult();
                }
                if (inBatch)
                {
                    await InBatchAsync(Write);
                }
                else
                {
                    Write();
                }
                var what = $"option {ackEarly}, {flags}, in a batch: {inBatch}";
                Assert.That(writesAtCompletion, Is.GreaterThan(writes), what);
                Assert.That(pool.GetStats().EarlyAcks, Is.EqualTo(early), what);
            }
            finally
            {
                await pool.DisposeAsync();
            }
        }
    }

    [Test]
    public async Task A_failed_device_write_after_the_acknowledgement_fails_the_next_flush_and_is_never_served()
    {
        var storage = new FaultStorage();
        var (pool, v) = await OpenAsync(storage);
        var old = TestPools.Pattern(1, 4096);
        await InBatchAsync(() =>
        {
            v.WriteAsync(0, TestPools.Pattern(4, 4096), WriteFlags.Alone).GetAwaiter().GetResult();
            storage.FailWrites = 1;
        });
        var flush = Assert.ThrowsAsync<BlockVolumeException>(async () => await v.FlushAsync());
        Assert.That(flush!.Error, Is.EqualTo(BlockError.Io));
        Assert.That(flush.Message, Does.Contain("acknowledged before it reached the device was lost"));
        var read = Assert.ThrowsAsync<BlockVolumeException>(async () => await v.ReadAsync(0, new byte[4096]));
        Assert.That(read!.Message, Does.Contain("failed its checksum"), "the unwritten block is not served");
        Assert.That(async () => await v.WriteAsync(8192, TestPools.Pattern(5, 4096), WriteFlags.None), Throws.TypeOf<BlockVolumeException>());

        // No checkpoint may persist the map that points at the unwritten blocks (a checkpoint
        // that waited for the log while the write failed would, without the check).
        Assert.That(async () => await pool.CheckpointAsync(), Throws.InstanceOf<InvalidOperationException>().With.Message.Contains("no checkpoint after a device error"));

        // Reopened, recovery finds the log as the device has it: the write never happened.
        var image = storage.CleanImage();
        await pool.AbandonAsync();
        await using var reopened = await Pool.OpenAsync(TestPools.Options(image));
        var back = new byte[4096];
        var again = reopened.OpenVolume("v");
        await again.ReadAsync(0, back);
        Assert.That(back, Is.EqualTo(old));
        await again.WriteAsync(0, TestPools.Pattern(6, 4096), WriteFlags.Fua);
    }

    /// <summary>Sends its records when the caller's batch ends, as a replication link does; the replicas answer when the test says.</summary>
    private sealed class DeferredForwarder(List<string> events) : Ballast.Engine.Replication.IRecordForwarder
    {
        public readonly TaskCompletionSource Answered = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public ValueTask Forward(in Ballast.Engine.Replication.ReplicatedRecord record, ReadOnlyMemory<byte> payload, bool completeInline)
        {
            Assert.That(CompletionBatch.TryDefer(new Recorder(events, "record sent")), Is.True);
            return new ValueTask(Answered.Task);
        }

        public ValueTask FlushAsync(bool completeInline, CancellationToken ct) => ValueTask.CompletedTask;
    }

    [Test]
    public async Task On_a_replicated_volume_the_local_device_write_follows_the_forwarded_record_and_the_client_waits_for_the_replicas()
    {
        var storage = new FaultStorage();
        var (pool, v) = await OpenAsync(storage);
        var events = new List<string>();
        var forwarder = new DeferredForwarder(events);
        ((EngineVolume)v).AttachForwarder(forwarder);
        storage.BeforeWrite = _ =>
        {
            lock (events)
            {
                events.Add("device write");
            }
        };
        var stats = pool.GetStats();
        Task? write = null;
        await InBatchAsync(() => write = v.WriteAsync(0, TestPools.Pattern(7, 4096), WriteFlags.Alone | WriteFlags.CompleteInline).AsTask());
        lock (events)
        {
            Assert.That(events.Take(2), Is.EqualTo(new[] { "record sent", "device write" }), "the local write goes beside the round trip, not before it");
        }
        var after = pool.GetStats();
        Assert.That((after.EarlyAcks - stats.EarlyAcks, after.InlineBatches - stats.InlineBatches), Is.EqualTo((1, 1)));
        Assert.That(write!.IsCompleted, Is.False, "the client's write waits for the replicas");
        forwarder.Answered.SetResult();
        await write.WaitAsync(TimeSpan.FromSeconds(10));
        storage.BeforeWrite = null;
        await pool.DisposeAsync();
    }
}
