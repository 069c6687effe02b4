using System.Buffers.Binary;
using System.Globalization;
using System.Net;
using System.Text.Json;
using Ballast.TestSupport;
using static Ballast.TestSupport.NbdRawClient;

namespace Ballast.Daemon.Tests.Replication;

/// <summary>
/// Several ballastd processes in network namespaces: replicas killed, links cut and hurt under
/// load, failover, fencing. Every loop is bounded in count and time.
/// </summary>
[NonParallelizable]
[CancelAfter(300_000)]
public class ReplicationClusterTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(120);

    private static async Task CreateAsync(NetnsCluster c, int node, string name, int replicas, int min, string size = "256MiB")
    {
        var r = await c.CtlAsync(node, "volume", "create", name, "--size", size, "--replicas", replicas.ToString(CultureInfo.InvariantCulture),
            "--min-replicas", min.ToString(CultureInfo.InvariantCulture));
        Assert.That(r.ExitCode, Is.Zero, r.ToString());
    }

    private static async Task<List<(string Node, string State)>> ReplicasAsync(NetnsCluster c, int node, string name)
    {
        var r = await c.CtlAsync(node, "volume", "inspect", name, "--json");
        Assert.That(r.ExitCode, Is.Zero, r.ToString());
        using var doc = JsonDocument.Parse(r.Stdout);
        return [.. doc.RootElement.GetProperty("replicas").EnumerateArray().Select(e => (e.GetProperty("node").GetString()!, e.GetProperty("state").GetString()!))];
    }

    private static async Task WaitAllInSyncAsync(NetnsCluster c, int node, string name, int copies)
    {
        var deadline = DateTime.UtcNow.AddSeconds(90);
        List<(string Node, string State)> last = [];
        while (DateTime.UtcNow < deadline)
        {
            last = await ReplicasAsync(c, node, name);
            if (last.Count == copies && last.All(x => x.State == "in-sync"))
            {
                return;
            }
            await Task.Delay(500);
        }
        Assert.Fail($"copies of {name} not in sync: {string.Join(", ", last)}\n{c.Daemon(node).Output}");
    }

    private static async Task VerifyCleanAsync(NetnsCluster c, int node, string name)
    {
        var r = await c.CtlAsync(node, "volume", "verify", name);
        Assert.That(r.ExitCode, Is.Zero, $"verify found differences or failed:\n{r}");
        Assert.That(r.Stdout, Does.Contain("every in-sync copy matches"));
    }

    private static async Task<double> MetricAsync(NetnsCluster c, int node, string name, string? volume = null)
    {
        var r = await Tool.RunOkAsync("curl", ["-s", "--unix-socket", c.ApiSocket(node), "http://ballastd/metrics.json"], Limit);
        using var doc = JsonDocument.Parse(r.Stdout);
        if (!doc.RootElement.TryGetProperty(name, out var points))
        {
            return 0;
        }
        foreach (var p in points.EnumerateArray())
        {
            if (volume == null || (p.GetProperty("labels").TryGetProperty("volume", out var v) && v.GetString() == volume))
            {
                return p.GetProperty("value").GetDouble();
            }
        }
        return 0;
    }

    /// <summary>fio over NBD with crc32c verification; returns the running process's task.</summary>
    private static Task<Tool.Result> FioAsync(IPEndPoint nbd, string volume, int sizeMiB, int seconds) =>
        Tool.RunAsync(Tool.Require("fio", "fio"), [
            "--name=load", "--ioengine=nbd", $"--uri=nbd://{nbd.Address}:{nbd.Port}/{volume}", "--rw=randwrite", "--bs=4k", "--iodepth=16",
            $"--size={sizeMiB}M", "--verify=crc32c", "--verify_fatal=1", "--do_verify=1", "--verify_backlog=4096",
            $"--runtime={seconds}", "--time_based", "--output-format=json"], TimeSpan.FromSeconds(seconds + 120));

    private static void AssertFioClean(Tool.Result fio)
    {
        Assert.That(fio.ExitCode, Is.Zero, fio.ToString());
        using var doc = JsonDocument.Parse(fio.Stdout[fio.Stdout.IndexOf('{', StringComparison.Ordinal)..]);
        var job = doc.RootElement.GetProperty("jobs")[0];
        Assert.That(job.GetProperty("error").GetInt32(), Is.Zero, "fio saw an error");
        Assert.That(job.GetProperty("write").GetProperty("io_bytes").GetInt64(), Is.GreaterThan(0));
    }

    [TestCase(2)]
    [TestCase(3)]
    public async Task A_replica_killed_under_fio_load_comes_back_by_resync_with_no_client_errors(int copies)
    {
        await using var c = await NetnsCluster.CreateAsync(copies);
        for (var i = 1; i <= copies; i++)
        {
            await c.StartAsync(i);
        }
        await CreateAsync(c, 1, "vol", copies, copies - 1);
        var fio = FioAsync(c.Nbd(1), "vol", 64, 14);
        await Task.Delay(2500);
        var atKill = await MetricAsync(c, 1, "ballast_volume_write_bytes_total", "vol");
        var resyncBefore = await MetricAsync(c, 1, "ballast_replication_resync_bytes_total");
        await c.KillAsync(copies);
        await Task.Delay(3000);
        var atRestart = await MetricAsync(c, 1, "ballast_volume_write_bytes_total", "vol");
        await c.StartAsync(copies);
        AssertFioClean(await fio);
        await WaitAllInSyncAsync(c, 1, "vol", copies);
        var moved = await MetricAsync(c, 1, "ballast_replication_resync_bytes_total") - resyncBefore;
        var outage = atRestart - atKill;
        TestContext.Out.WriteLine($"written while the replica was down: {outage / 1048576:0.0} MiB; resync moved {moved / 1048576:0.0} MiB");
        Assert.That(outage, Is.GreaterThan(0), "writes went on while the replica was down");
        Assert.That(moved, Is.LessThanOrEqualTo(2 * outage), "resync moves at most twice what was written during the outage");
        await VerifyCleanAsync(c, 1, "vol");
    }

    [TestCase(false)]
    [TestCase(true)]
    public async Task A_cut_link_under_load_costs_no_client_error_and_heals_by_resync(bool oneWay)
    {
        await using var c = await NetnsCluster.CreateAsync(3);
        for (var i = 1; i <= 3; i++)
        {
            await c.StartAsync(i);
        }
        await CreateAsync(c, 1, "vol", 3, 2);
        var fio = FioAsync(c.Nbd(1), "vol", 64, 14);
        await Task.Delay(2000);
        await NetnsCluster.CutAsync(1, 2, oneWay);
        await Task.Delay(5000);
        var during = await ReplicasAsync(c, 1, "vol");
        Assert.That(during.Single(x => x.Node == "n2").State, Is.Not.EqualTo("in-sync"), "the cut replica was taken out of sync");
        await c.HealAsync();
        AssertFioClean(await fio);
        await WaitAllInSyncAsync(c, 1, "vol", 3);
        await VerifyCleanAsync(c, 1, "vol");
    }

    [Test]
    public async Task Delays_stalls_and_resets_on_a_replica_link_cost_no_client_error()
    {
        await using var c = await NetnsCluster.CreateAsync(2);
        // Node 1 reaches node 2 through a proxy in the test's namespace.
        await using var proxy = new FaultProxy(new IPEndPoint(IPAddress.Parse("10.88.0.254"), 0), new IPEndPoint(NetnsCluster.Address(2), 7110));
        c.Routes[(1, 2)] = $"10.88.0.254:{proxy.Listen.Port}";
        await c.StartAsync(1);
        await c.StartAsync(2);
        await CreateAsync(c, 1, "vol", 2, 1);
        var fio = FioAsync(c.Nbd(1), "vol", 64, 16);
        await Task.Delay(1500);
        proxy.Delay = TimeSpan.FromMilliseconds(20);
        await Task.Delay(2000);
        proxy.Delay = TimeSpan.Zero;
        proxy.Stalled = true;
        await Task.Delay(4000);
        proxy.Stalled = false;
        await Task.Delay(1500);
        proxy.ResetAll();
        await Task.Delay(1500);
        proxy.ResetAll();
        AssertFioClean(await fio);
        await WaitAllInSyncAsync(c, 1, "vol", 2);
        Assert.That(Interlocked.Read(ref proxy.Connections), Is.GreaterThanOrEqualTo(2), "the link was re-established after the faults");
        Assert.That(await MetricAsync(c, 1, "ballast_replication_replica_failures_total"), Is.GreaterThan(0), "the stall was noticed");
        await VerifyCleanAsync(c, 1, "vol");
    }

    private static byte[] Block(int block, int version)
    {
        var b = new byte[4096];
        new Random(HashCode.Combine(block, version)).NextBytes(b);
        BinaryPrimitives.WriteInt32LittleEndian(b, block);
        BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(4), version);
        return b;
    }

    [Test]
    public async Task After_the_primary_dies_attaching_a_replica_serves_every_acknowledged_write()
    {
        await using var c = await NetnsCluster.CreateAsync(3);
        for (var i = 1; i <= 3; i++)
        {
            await c.StartAsync(i);
        }
        await CreateAsync(c, 1, "vol", 3, 2, "64MiB");
        const int Blocks = 2048;
        var acked = new int[Blocks];
        var sent = new int[Blocks];
        var (client, _, _) = await OpenAsync(c.Nbd(1), "vol");
        var rng = new Random(5);
        var inFlight = new Dictionary<ulong, (int Block, int Version)>();
        ulong cookie = 0;
        var killAt = DateTime.UtcNow.AddSeconds(3);
        var killed = false;
        try
        {
            while (true)
            {
                while (inFlight.Count < 16)
                {
                    int b;
                    do
                    {
                        b = rng.Next(Blocks);
                    }
                    while (inFlight.Values.Any(x => x.Block == b));
                    var v = ++sent[b];
                    inFlight[++cookie] = (b, v);
                    await client.SendRequestAsync(0, CmdWrite, cookie, (ulong)b * 4096, 4096, Block(b, v));
                }
                if (!killed && DateTime.UtcNow > killAt)
                {
                    killed = true;
                    await c.KillAsync(1);
                }
                var r = await client.ReadSimpleReplyAsync();
                Assert.That(r.Error, Is.Zero);
                var (blk, ver) = inFlight[r.Cookie];
                inFlight.Remove(r.Cookie);
                acked[blk] = Math.Max(acked[blk], ver);
            }
        }
        catch (Exception e) when (e is IOException or EndOfStreamException or System.Net.Sockets.SocketException)
        {
            // The primary is gone.
        }
        await client.DisposeAsync();
        Assert.That(killed, Is.True);
        Assert.That(acked.Sum(), Is.GreaterThan(100), "writes were acknowledged before the kill");

        // A write in flight at the kill may have reached one replica only: attach refuses the
        // node that lacks it and names the one that has it, which the operator then uses.
        var target = 2;
        var attach = await c.CtlAsync(target, "volume", "attach", "vol");
        var ahead = System.Text.RegularExpressions.Regex.Match(attach.Stderr, @"node n(\d) holds newer data");
        if (attach.ExitCode == 4 && ahead.Success)
        {
            target = int.Parse(ahead.Groups[1].Value, CultureInfo.InvariantCulture);
            attach = await c.CtlAsync(target, "volume", "attach", "vol");
        }
        Assert.That(attach.ExitCode, Is.Zero, attach.ToString());
        var (reader, _, _) = await OpenAsync(c.Nbd(target), "vol");
        await using (reader)
        {
            for (var b = 0; b < Blocks; b += 256)
            {
                await reader.SendRequestAsync(0, CmdRead, (ulong)b, (ulong)b * 4096, 256 * 4096);
                var data = (await reader.ReadSimpleReplyAsync(256 * 4096)).Data;
                for (var k = 0; k < 256; k++)
                {
                    var span = data.AsSpan(k * 4096, 4096);
                    var block = b + k;
                    if (acked[block] == 0 && !span.ContainsAnyExcept((byte)0))
                    {
                        continue;
                    }
                    var version = BinaryPrimitives.ReadInt32LittleEndian(span[4..]);
                    Assert.That(BinaryPrimitives.ReadInt32LittleEndian(span), Is.EqualTo(block), $"block {block} holds another block's data");
                    Assert.That(version, Is.GreaterThanOrEqualTo(acked[block]), $"block {block}: acknowledged version {acked[block]} lost");
                    Assert.That(version, Is.LessThanOrEqualTo(sent[block]), $"block {block} holds a version never written");
                    Assert.That(span.SequenceEqual(Block(block, version)), Is.True, $"block {block} version {version} is damaged");
                }
            }
        }
    }

    [Test]
    public async Task An_isolated_primary_cannot_write_once_another_node_is_attached()
    {
        await using var c = await NetnsCluster.CreateAsync(3);
        for (var i = 1; i <= 3; i++)
        {
            await c.StartAsync(i);
        }
        await CreateAsync(c, 1, "vol", 3, 2, "64MiB");
        var (old, _, _) = await OpenAsync(c.Nbd(1), "vol");
        await using (old)
        {
            await old.SendRequestAsync(FlagFua, CmdWrite, 1, 0, 4096, Block(0, 1));
            Assert.That((await old.ReadSimpleReplyAsync()).Error, Is.Zero);

            await NetnsCluster.CutAsync(1, 2);
            await NetnsCluster.CutAsync(1, 3);
            // Alone, the old primary has fewer than 2 copies: writes fail (after the replica timeout).
            await old.SendRequestAsync(0, CmdWrite, 2, 4096, 4096, Block(1, 1));
            Assert.That((await old.ReadSimpleReplyAsync()).Error, Is.EqualTo(EIo), "an isolated primary refuses writes below min-replicas");

            var attach = await c.CtlAsync(2, "volume", "attach", "vol");
            Assert.That(attach.ExitCode, Is.Zero, attach.ToString());
            var (fresh, _, _) = await OpenAsync(c.Nbd(2), "vol");
            await using (fresh)
            {
                await fresh.SendRequestAsync(FlagFua, CmdWrite, 3, 8192, 4096, Block(2, 1));
                Assert.That((await fresh.ReadSimpleReplyAsync()).Error, Is.Zero, "the new primary takes writes");
                await fresh.SendRequestAsync(0, CmdRead, 4, 0, 4096);
                Assert.That((await fresh.ReadSimpleReplyAsync(4096)).Data, Is.EqualTo(Block(0, 1)), "the acknowledged write survived the failover");
            }

            await c.HealAsync();
            await WaitAllInSyncAsync(c, 2, "vol", 3);
            // The old primary learned of the new epoch: it no longer serves the volume.
            try
            {
                await old.SendRequestAsync(0, CmdWrite, 5, 12288, 4096, Block(3, 1));
                var r = await old.ReadSimpleReplyAsync();
                Assert.That(r.Error, Is.Not.Zero, "the old primary's write after the takeover is refused");
            }
            catch (Exception e) when (e is IOException or EndOfStreamException or System.Net.Sockets.SocketException)
            {
                // Disconnected: refused as well.
            }
            Assert.That((await Tool.RunAsync("nbdinfo", [$"nbd://{NetnsCluster.Address(1)}:10809/vol"], Limit)).ExitCode, Is.Not.Zero, "node 1 does not serve the volume any more");
        }
        await VerifyCleanAsync(c, 2, "vol");
    }

    [Test]
    public async Task Below_min_replicas_writes_fail_cleanly_and_succeed_again_after_recovery()
    {
        await using var c = await NetnsCluster.CreateAsync(2);
        await c.StartAsync(1);
        await c.StartAsync(2);
        await CreateAsync(c, 1, "vol", 2, 2, "64MiB");
        var (client, _, _) = await OpenAsync(c.Nbd(1), "vol");
        await using (client)
        {
            await client.SendRequestAsync(0, CmdWrite, 1, 0, 4096, Block(0, 1));
            Assert.That((await client.ReadSimpleReplyAsync()).Error, Is.Zero);
            await c.KillAsync(2);
            await client.SendRequestAsync(0, CmdWrite, 2, 0, 4096, Block(0, 2));
            Assert.That((await client.ReadSimpleReplyAsync()).Error, Is.EqualTo(EIo), "a write that cannot reach 2 copies fails");
            await client.SendRequestAsync(0, CmdRead, 3, 4096, 4096);
            Assert.That((await client.ReadSimpleReplyAsync(4096)).Error, Is.Zero, "reads go on");
            await c.StartAsync(2);
            await WaitAllInSyncAsync(c, 1, "vol", 2);
            await client.SendRequestAsync(FlagFua, CmdWrite, 4, 0, 4096, Block(0, 3));
            Assert.That((await client.ReadSimpleReplyAsync()).Error, Is.Zero, "writes succeed again");
        }
        await VerifyCleanAsync(c, 1, "vol");
    }
}
