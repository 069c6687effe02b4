using System.Net.Sockets;
using Ballast.Engine.Async;
using Ballast.Engine.Replication;
using Ballast.Engine.Replication.Cluster;
using Ballast.Engine.Tests.FaultInjection;
using Ballast.Engine.Volumes;

namespace Ballast.Engine.Tests.Replication;

/// <summary>Several nodes in one process (pools in memory, links over Unix sockets): the replication data path end to end.</summary>
[CancelAfter(120_000)]
public class ReplicationTests
{
    private string _dir = null!;

    [SetUp]
    public void SetUp()
    {
        _dir = Path.Combine(Path.GetTempPath(), "ballast-repl-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(_dir);
    }

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    /// <summary>One node: its storage survives restarts; its pool and replication come and go.</summary>
    private sealed class Node(string id, string dir, IMembership membership) : IAsyncDisposable
    {
        public FaultStorage Storage = new();
        public Pool Pool = null!;
        public ReplicationNode Replication = null!;
        public readonly string Id = id;
        public readonly List<string> Log = [];

        public async Task StartAsync()
        {
            Pool = await Pool.OpenAsync(TestPools.Options(Storage, capacity: 128L << 20, background: true));
            Replication = new ReplicationNode(Pool, new ReplicationOptions
            {
                NodeId = Id,
                Listen = membership.Find(Id)!.Address,
                Membership = membership,
                CatalogPath = Path.Combine(dir, $"{Id}.json"),
                RequestTimeout = TimeSpan.FromSeconds(2),
                Log = (l, m) => { lock (Log) { Log.Add($"{l} {m}"); } },
            });
            await Replication.StartAsync();
        }

        /// <summary>Process death: nothing is flushed or closed; what was written but not synced may be lost.</summary>
        public async Task CrashAsync()
        {
            await Replication.DisposeAsync();
            await Pool.AbandonAsync();
            Storage = Storage.CrashImage(new Random(1), CrashMode.Prefix);
        }

        public async ValueTask DisposeAsync()
        {
            await Replication.DisposeAsync();
            await Pool.DisposeAsync();
        }
    }

    private async Task<List<Node>> StartNodesAsync(int n)
    {
        var infos = Enumerable.Range(1, n).Select(i => new NodeInfo($"n{i}", new UnixDomainSocketEndPoint(Path.Combine(_dir, $"n{i}.sock")))).ToList();
        var nodes = new List<Node>();
        foreach (var info in infos)
        {
            var node = new Node(info.Id, _dir, new StaticMembership(info.Id, infos));
            await node.StartAsync();
            nodes.Add(node);
        }
        _nodes = nodes;
        return nodes;
    }

    private static byte[] Pattern(int seed, int length)
    {
        var b = new byte[length];
        new Random(seed).NextBytes(b);
        return b;
    }

    private static async Task<byte[]> ReadAsync(Pool pool, string volume, long offset, int length)
    {
        var b = new byte[length];
        await pool.OpenVolume(volume).ReadAsync(offset, b);
        return b;
    }

    private List<Node> _nodes = [];

    private async Task WaitAsync(Func<bool> condition, string what, int seconds = 30)
    {
        var deadline = DateTime.UtcNow.AddSeconds(seconds);
        while (!condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                Assert.Fail($"timed out waiting for {what}\n" + string.Join("\n", _nodes.SelectMany(n => n.Log.Select(l => $"{n.Id}: {l}"))));
            }
            await Task.Delay(50);
        }
    }

    private static string States(Node primary, string volume) =>
        string.Join(", ", primary.Replication.Describe(volume)!.Select(r => $"{r.Node}:{r.State}"));

    [Test]
    public async Task Writes_on_the_primary_are_on_every_replica_before_they_complete()
    {
        var nodes = await StartNodesAsync(3);
        try
        {
            var v = await nodes[0].Replication.CreateAsync("db", 8 << 20, 4096, replicas: 3, minReplicas: 2);
            Assert.That(States(nodes[0], "db"), Is.EqualTo("n1:in-sync, n2:in-sync, n3:in-sync"));
            var data = Pattern(1, 1 << 20);
            await v.WriteAsync(4096, data, WriteFlags.None);
            await v.TrimAsync(2 << 20, 65536);
            await v.WriteZeroesAsync(3 << 20, 8192, mayDeallocate: false);
            await v.FlushAsync();
            foreach (var n in nodes.Skip(1))
            {
                Assert.That(await ReadAsync(n.Pool, "db", 4096, data.Length), Is.EqualTo(data), $"node {n.Id}");
                Assert.That(n.Pool.OpenVolume("db").Lsn, Is.EqualTo(v.Lsn), "same LSNs everywhere");
                Assert.That(n.Pool.OpenVolume("db").Uid, Is.EqualTo(v.Uid), "same identity everywhere");
                Assert.That(n.Replication.IsServable("db"), Is.False, "a replica does not serve clients");
            }
            Assert.That(await nodes[0].Replication.VerifyAsync("db"), Is.Empty);
        }
        finally
        {
            foreach (var n in nodes)
            {
                await n.DisposeAsync();
            }
        }
    }

    [Test]
    public async Task Only_writers_that_asked_to_complete_inline_continue_inside_the_batch_that_finished_them()
    {
        // A writer's continuation inside a batch runs on the link's receive loop (or the
        // appender); one that did not ask for that (read-modify-write, slow iSCSI paths) must
        // continue on the thread pool instead.
        var nodes = await StartNodesAsync(2);
        try
        {
            var v = await nodes[0].Replication.CreateAsync("db", 8 << 20, 4096, replicas: 2, minReplicas: 2);
            var data = Pattern(1, 4096);
            int plainInBatch = 0, inlineInBatch = 0, inlineAwaited = 0;
            for (var i = 0; i < 200; i++)
            {
                await v.WriteAsync(i * 4096L, data, WriteFlags.None).ConfigureAwait(false);
                plainInBatch += CompletionBatch.IsOpen ? 1 : 0;
                // A write that finished before it was awaited goes on on this thread, in no batch
                // (seen in 1 to 6 of 200 writes): only the others say where completions run.
                var write = v.WriteAsync(i * 4096L, data, WriteFlags.CompleteInline);
                var awaited = !write.IsCompleted;
                await write.ConfigureAwait(false);
                inlineAwaited += awaited ? 1 : 0;
                inlineInBatch += awaited && CompletionBatch.IsOpen ? 1 : 0;
            }
            Assert.That(inlineAwaited, Is.GreaterThanOrEqualTo(150), "most inline writes were still in flight when awaited");
            Assert.That(plainInBatch, Is.Zero, "a plain writer never continues inside a batch");
            // A write can also finish between the IsCompleted check and the await's registration
            // (the test thread preempted there, seen once in 200 on a loaded machine); its
            // continuation then runs on the thread pool. Allow two such races, no more: a writer
            // that lost CompleteInline would continue outside the batch every time.
            Assert.That(inlineInBatch, Is.InRange(inlineAwaited - 2, inlineAwaited), $"of {inlineAwaited} inline writes awaited in flight, {inlineInBatch} continued inside the batch");
        }
        finally
        {
            foreach (var n in nodes)
            {
                await n.DisposeAsync();
            }
        }
    }

    [Test]
    public async Task A_replica_that_drops_out_is_resynced_with_only_what_changed()
    {
        var nodes = await StartNodesAsync(2);
        try
        {
            var v = await nodes[0].Replication.CreateAsync("db", 16 << 20, 4096, replicas: 2, minReplicas: 1);
            await v.WriteAsync(0, Pattern(1, 8 << 20), WriteFlags.None);
            await v.FlushAsync();
            // The replica's node dies; the primary goes on alone (min 1).
            await nodes[1].CrashAsync();
            long written = 0;
            for (var i = 0; i < 64; i++)
            {
                await v.WriteAsync(i * 65536L, Pattern(100 + i, 16384), WriteFlags.None);
                written += 16384;
            }
            await WaitAsync(() => States(nodes[0], "db").Contains("n2:offline"), "the replica to be seen offline");
            var before = nodes[0].Replication.ResyncBytes;
            await nodes[1].StartAsync();
            await WaitAsync(() => States(nodes[0], "db") == "n1:in-sync, n2:in-sync", "the replica to resync");
            var moved = nodes[0].Replication.ResyncBytes - before;
            TestContext.Out.WriteLine($"written during the outage {written >> 10} KiB, resync moved {moved >> 10} KiB");
            Assert.That(moved, Is.LessThanOrEqualTo(2 * written), "resync moves only what changed");
            Assert.That(await nodes[0].Replication.VerifyAsync("db"), Is.Empty);
            Assert.That(await ReadAsync(nodes[1].Pool, "db", 0, 8 << 20), Is.EqualTo(await ReadAsync(nodes[0].Pool, "db", 0, 8 << 20)));
        }
        finally
        {
            foreach (var n in nodes)
            {
                await n.DisposeAsync();
            }
        }
    }

    [Test]
    public async Task A_resync_of_scattered_data_zeroes_and_trims_of_every_size_leaves_identical_copies()
    {
        // Copies travel in groups (16 records or 1 MiB of data each): this change set crosses many
        // group boundaries, has records larger than a group, and ends in a partial 4 KiB block.
        var nodes = await StartNodesAsync(2);
        try
        {
            const long size = (24 << 20) + 1536;
            var v = await nodes[0].Replication.CreateAsync("db", size, 512, replicas: 2, minReplicas: 1);
            await v.WriteAsync(0, Pattern(1, 24 << 20), WriteFlags.None);
            await v.FlushAsync();
            await nodes[1].CrashAsync();
            var rng = new Random(7);
            for (var i = 0; i < 300; i++)
            {
                await v.WriteAsync(rng.Next(6144) * 4096L, Pattern(10 + i, 4096), WriteFlags.None);
            }
            await v.WriteAsync(3 << 20, Pattern(500, 3 << 20), WriteFlags.None);
            await v.WriteZeroesAsync(8 << 20, 1 << 20, mayDeallocate: false);
            await v.TrimAsync(12 << 20, 2 << 20);
            for (var i = 0; i < 40; i++)
            {
                await v.WriteZeroesAsync(rng.Next(6144) * 4096L, 8192, mayDeallocate: i % 2 == 0);
            }
            await v.WriteAsync(size - 2560, Pattern(600, 2560), WriteFlags.None);
            await WaitAsync(() => States(nodes[0], "db").Contains("n2:offline"), "the replica to be seen offline");
            await nodes[1].StartAsync();
            await WaitAsync(() => States(nodes[0], "db") == "n1:in-sync, n2:in-sync", "the replica to resync");
            Assert.That(await nodes[0].Replication.VerifyAsync("db"), Is.Empty);
            Assert.That(await ReadAsync(nodes[1].Pool, "db", 0, (int)size), Is.EqualTo(await ReadAsync(nodes[0].Pool, "db", 0, (int)size)));
        }
        finally
        {
            foreach (var n in nodes)
            {
                await n.DisposeAsync();
            }
        }
    }

    [Test]
    public async Task Below_min_replicas_writes_fail_and_succeed_again_after_resync()
    {
        var nodes = await StartNodesAsync(3);
        try
        {
            var v = await nodes[0].Replication.CreateAsync("db", 4 << 20, 4096, replicas: 3, minReplicas: 2);
            await v.WriteAsync(0, Pattern(1, 65536), WriteFlags.None);
            await nodes[1].CrashAsync();
            await v.WriteAsync(65536, Pattern(2, 65536), WriteFlags.None);
            await nodes[2].CrashAsync();
            await WaitAsync(() => States(nodes[0], "db") == "n1:in-sync, n2:offline, n3:offline", "both replicas offline");
            var e = Assert.ThrowsAsync<BlockVolumeException>(async () => await v.WriteAsync(0, Pattern(3, 4096), WriteFlags.None));
            Assert.That(e!.Error, Is.EqualTo(BlockError.Fenced));
            Assert.That(e.Message, Does.Contain("required copies"));
            await nodes[2].StartAsync();
            await WaitAsync(() => States(nodes[0], "db").Contains("n3:in-sync"), "one replica back in sync");
            await v.WriteAsync(0, Pattern(4, 4096), WriteFlags.Fua);
            Assert.That(await ReadAsync(nodes[2].Pool, "db", 0, 4096), Is.EqualTo(Pattern(4, 4096)));
            await nodes[1].StartAsync();
            await WaitAsync(() => States(nodes[0], "db") == "n1:in-sync, n2:in-sync, n3:in-sync", "all in sync");
            Assert.That(await nodes[0].Replication.VerifyAsync("db"), Is.Empty);
        }
        finally
        {
            foreach (var n in nodes)
            {
                await n.DisposeAsync();
            }
        }
    }

    [Test]
    public async Task Attaching_on_a_replica_fences_the_old_primary_and_keeps_every_acknowledged_write()
    {
        var nodes = await StartNodesAsync(3);
        try
        {
            var v = await nodes[0].Replication.CreateAsync("db", 4 << 20, 4096, replicas: 3, minReplicas: 2);
            var acked = Pattern(7, 1 << 20);
            await v.WriteAsync(0, acked, WriteFlags.None);
            // n2 takes over while n1 is still running (and connected): n1 must stop taking writes.
            await nodes[1].Replication.AttachAsync("db", force: false);
            Assert.That(nodes[1].Replication.IsServable("db"), Is.True);
            await WaitAsync(() => !nodes[0].Replication.IsServable("db"), "the old primary to stop serving");
            var e = Assert.ThrowsAsync<BlockVolumeException>(async () => await v.WriteAsync(0, Pattern(8, 4096), WriteFlags.None));
            Assert.That(e!.Error, Is.EqualTo(BlockError.Fenced));
            var nv = nodes[1].Pool.OpenVolume("db");
            Assert.That(await ReadAsync(nodes[1].Pool, "db", 0, acked.Length), Is.EqualTo(acked));
            await nv.WriteAsync(1 << 20, Pattern(9, 65536), WriteFlags.Fua);
            await WaitAsync(() => States(nodes[1], "db") == "n2:in-sync, n1:in-sync, n3:in-sync", "the new primary's replicas in sync");
            Assert.That(await ReadAsync(nodes[0].Pool, "db", 1 << 20, 65536), Is.EqualTo(Pattern(9, 65536)), "the old primary is now a replica");
            Assert.That(await nodes[1].Replication.VerifyAsync("db"), Is.Empty);
        }
        finally
        {
            foreach (var n in nodes)
            {
                await n.DisposeAsync();
            }
        }
    }

    [Test]
    public async Task An_isolated_primarys_divergent_writes_are_reset_when_it_rejoins()
    {
        var nodes = await StartNodesAsync(2);
        try
        {
            var v = await nodes[0].Replication.CreateAsync("db", 4 << 20, 4096, replicas: 2, minReplicas: 1);
            await v.WriteAsync(0, Pattern(1, 65536), WriteFlags.Fua);
            // n1 is cut off and keeps writing alone (min 1); n2 is attached with --force meanwhile.
            await nodes[1].Replication.DisposeAsync();
            await v.WriteAsync(0, Pattern(2, 8192), WriteFlags.Fua);
            await v.WriteAsync(1 << 20, Pattern(3, 8192), WriteFlags.Fua);
            nodes[1].Replication = new ReplicationNode(nodes[1].Pool, new ReplicationOptions
            {
                NodeId = "n2",
                Listen = new UnixDomainSocketEndPoint(Path.Combine(_dir, "n2-isolated.sock")),
                Membership = new StaticMembership("n2", [new NodeInfo("n1", new UnixDomainSocketEndPoint(Path.Combine(_dir, "nowhere.sock"))), new NodeInfo("n2", new UnixDomainSocketEndPoint(Path.Combine(_dir, "n2-isolated.sock")))]),
                CatalogPath = Path.Combine(_dir, "n2.json"),
                RequestTimeout = TimeSpan.FromSeconds(2),
            });
            await nodes[1].Replication.StartAsync();
            var refused = Assert.ThrowsAsync<InvalidOperationException>(async () => await nodes[1].Replication.AttachAsync("db", force: false));
            Assert.That(refused!.Message, Does.Contain("majority"));
            await nodes[1].Replication.AttachAsync("db", force: true);
            var nv = nodes[1].Pool.OpenVolume("db");
            await nv.WriteAsync(2 << 20, Pattern(4, 8192), WriteFlags.Fua);
            // The partition heals: n2 (new primary) reaches n1 again.
            await nodes[1].Replication.DisposeAsync();
            nodes[1].Replication = new ReplicationNode(nodes[1].Pool, new ReplicationOptions
            {
                NodeId = "n2",
                Listen = new UnixDomainSocketEndPoint(Path.Combine(_dir, "n2.sock")),
                Membership = new StaticMembership("n2", [new NodeInfo("n1", new UnixDomainSocketEndPoint(Path.Combine(_dir, "n1.sock"))), new NodeInfo("n2", new UnixDomainSocketEndPoint(Path.Combine(_dir, "n2.sock")))]),
                CatalogPath = Path.Combine(_dir, "n2.json"),
                RequestTimeout = TimeSpan.FromSeconds(2),
            });
            await nodes[1].Replication.StartAsync();
            await WaitAsync(() => States(nodes[1], "db") == "n2:in-sync, n1:in-sync", "the old primary to resync as a replica");
            Assert.That(nodes[0].Replication.IsServable("db"), Is.False, "the old primary was demoted");
            Assert.ThrowsAsync<BlockVolumeException>(async () => await v.WriteAsync(0, Pattern(5, 4096), WriteFlags.None));
            // Its divergent writes are gone; the new primary's data is everywhere.
            Assert.That(await ReadAsync(nodes[0].Pool, "db", 0, 65536), Is.EqualTo(Pattern(1, 65536)));
            Assert.That(await ReadAsync(nodes[0].Pool, "db", 1 << 20, 8192), Is.All.EqualTo(0));
            Assert.That(await ReadAsync(nodes[0].Pool, "db", 2 << 20, 8192), Is.EqualTo(Pattern(4, 8192)));
            Assert.That(await nodes[1].Replication.VerifyAsync("db"), Is.Empty);
        }
        finally
        {
            foreach (var n in nodes)
            {
                await n.DisposeAsync();
            }
        }
    }

    [Test]
    public async Task Writes_during_a_resync_end_up_identical_on_every_copy()
    {
        var nodes = await StartNodesAsync(2);
        try
        {
            var v = await nodes[0].Replication.CreateAsync("db", 16 << 20, 4096, replicas: 2, minReplicas: 1);
            using var stop = new CancellationTokenSource();
            var writers = Enumerable.Range(0, 8).Select(w => Task.Run(async () =>
            {
                var rng = new Random(w);
                var buf = new byte[4096];
                while (!stop.IsCancellationRequested)
                {
                    rng.NextBytes(buf);
                    await v.WriteAsync(rng.Next(4096) * 4096L, buf, WriteFlags.None);
                }
            })).ToList();
            await Task.Delay(300);
            await nodes[1].CrashAsync();
            await Task.Delay(500);
            await nodes[1].StartAsync();
            await WaitAsync(() => States(nodes[0], "db") == "n1:in-sync, n2:in-sync", "the replica to resync under load");
            await Task.Delay(300);
            await stop.CancelAsync();
            await Task.WhenAll(writers);
            var diffs = await nodes[0].Replication.VerifyAsync("db");
            Assert.That(diffs, Is.Empty, string.Join("; ", diffs) + "\n" + string.Join("\n", nodes.SelectMany(n => n.Log.Select(l => $"{n.Id}: {l}"))));
        }
        finally
        {
            foreach (var n in nodes)
            {
                await n.DisposeAsync();
            }
        }
    }
}
