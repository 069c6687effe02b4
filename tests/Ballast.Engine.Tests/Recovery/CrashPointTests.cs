using Ballast.Engine.Maps;
using Ballast.Engine.Tests.FaultInjection;
using Ballast.Engine.Tests.Model;
using Ballast.Engine.Volumes;

namespace Ballast.Engine.Tests.Recovery;

/// <summary>
/// Runs a random concurrent workload on a fault-injecting device, cuts the power at a seeded
/// storage operation (mid-batch, mid-checkpoint, mid-cleaning), rebuilds the device as a crash
/// would leave it, reopens, and checks every block against <see cref="DurabilityModel"/>.
/// 20 batches x 50 seeds = 1000 crash points.
/// </summary>
public class CrashPointTests
{
    private const int SeedsPerBatch = 50;

    [Test]
    public async Task Every_acknowledged_durable_write_survives_a_crash([Range(0, 19)] int batch)
    {
        var coverage = new Coverage();
        var runs = 0;
        foreach (var seed in Seeds(0, batch))
        {
            runs++;
            try
            {
                await RunAsync(seed, coverage);
            }
            catch (Exception e)
            {
                Assert.Fail($"crash seed {seed} failed: {e}");
            }
        }
        TestContext.Out.WriteLine($"crash points {SeedsPerBatch}: {coverage}");
        Assert.That(coverage.ZeroedFreeSegments, runs < 10 ? Is.GreaterThanOrEqualTo(0) : Is.GreaterThan(0), "some runs should zero free segments before the crash");
        Assert.That(coverage.Defragmented, runs < 10 ? Is.GreaterThanOrEqualTo(0) : Is.GreaterThan(0), "some runs should move blocks to defragment before the crash");
    }

    /// <summary>
    /// The same on a nearly full pool, where writes go into recycled holes and the cleaner hands
    /// out new ones: 4 batches x 50 seeds = 200 crash points.
    /// </summary>
    [Test]
    public async Task Every_acknowledged_durable_write_survives_a_crash_while_writes_recycle_holes([Range(0, 3)] int batch)
    {
        var coverage = new Coverage();
        var runs = 0;
        foreach (var seed in Seeds(100_000, batch))
        {
            runs++;
            try
            {
                await RunAsync(seed, coverage, nearlyFull: true);
            }
            catch (Exception e)
            {
                Assert.Fail($"crash seed {seed} (nearly full) failed: {e}");
            }
        }
        TestContext.Out.WriteLine($"crash points {SeedsPerBatch}: {coverage}");
        Assert.That(coverage.Recycled, runs == 0 ? Is.Zero : Is.GreaterThan(runs / 2), "most runs should write into recycled holes before the crash");
    }

    /// <summary>
    /// A batch's seeds. To chase one: BALLAST_CRASH_SEED=815 BALLAST_CRASH_REPEAT=50 dotnet test
    /// --filter CrashPointTests (batch 0 of each test runs it; the nearly-full test's seeds start
    /// at 100000). BALLAST_CRASH_SEED_BASE shifts every batch to fresh seeds.
    /// </summary>
    private static IEnumerable<int> Seeds(int first, int batch)
    {
        var only = Environment.GetEnvironmentVariable("BALLAST_CRASH_SEED");
        var repeat = int.Parse(Environment.GetEnvironmentVariable("BALLAST_CRASH_REPEAT") ?? "1");
        var seedBase = int.Parse(Environment.GetEnvironmentVariable("BALLAST_CRASH_SEED_BASE") ?? "0");
        return only == null
            ? Enumerable.Range(first + seedBase + batch * SeedsPerBatch, SeedsPerBatch)
            : batch == 0 ? Enumerable.Repeat(int.Parse(only), repeat) : [];
    }

    internal sealed class Coverage
    {
        public int FromCheckpoint;
        public int MultiSegmentReplay;
        public int TornOrDiscarded;
        public int AfterCleaning;
        public int Defragmented;
        public int SnapshotsTaken;
        public int Recycled;
        public int InPlaceMismatched;
        public int ZeroedFreeSegments;

        public override string ToString() =>
            $"{FromCheckpoint} recovered from a checkpoint, {MultiSegmentReplay} replayed across segments, {TornOrDiscarded} discarded a torn/unsynced tail, {AfterCleaning} crashed after cleaning, {Defragmented} moved blocks to defragment, {SnapshotsTaken} took snapshots, {Recycled} wrote into recycled holes, {InPlaceMismatched} replayed in-place records whose blocks were recycled again, {ZeroedFreeSegments} zeroed free segments ahead of the log";
    }

    private sealed record Vol(string Name, EngineVolume Volume, int Blocks);

    internal static async Task RunAsync(int seed, Coverage? coverage = null, bool nearlyFull = false)
    {
        var rng = new Random(seed);
        // Preparation scribbles over whole free segments: nothing recovery needs may lie there.
        var storage = new FaultStorage { ScribbleWhenZeroing = true };
        // The pool's log is kept and printed when the seed fails (printing as it goes changes
        // the timing enough to hide races).
        var logged = new System.Collections.Concurrent.ConcurrentQueue<string>();
        void log(PoolLogLevel l, string m) => logged.Enqueue($"[{l}] {m}");
        var pool = await TestPools.OpenAsync(storage, capacity: 24L << 20, log: log);
        var model = new DurabilityModel();
        var vols = new List<Vol>
        {
            new("a", await pool.CreateVolumeAsync("a", 2 << 20, 512), 512),
            new("b", await pool.CreateVolumeAsync("b", 4 << 20), 1024),
        };
        var snapshots = new List<(string Name, bool Acked, Dictionary<long, byte[]> Content)>();
        if (nearlyFull)
        {
            await FillUntilRecyclingAsync(pool, model, vols, rng);
        }
        storage.CrashAtOp = storage.Writes + storage.Syncs + 1 + rng.Next(1, 300);
        var busy = new HashSet<(string, long)>();
        var inflight = new List<Task>();
        long moved = 0;
        async Task CountDefragAsync(Task<DefragReport> defrag) => Interlocked.Add(ref moved, (await defrag).BlocksMoved);
        for (var op = 0; op < 400 && !storage.Crashed; op++)
        {
            inflight.RemoveAll(t => t.IsCompleted);
            if (inflight.Count >= 4)
            {
                await Task.WhenAny(inflight);
                continue;
            }
            var choice = rng.Next(100);
            var vol = vols[rng.Next(vols.Count)];
            if (choice < 60)
            {
                var start = rng.Next(vol.Blocks - 16);
                var count = 1 + rng.Next(16);
                var blocks = Enumerable.Range(start, count).Select(b => (vol.Name, (long)b)).ToList();
                if (!TryClaim(busy, blocks))
                {
                    continue;
                }
                var unaligned = vol.Name == "a" && rng.Next(3) == 0;
                var fua = rng.Next(5) == 0;
                inflight.Add(WriteAsync(model, vol, start, count, unaligned, fua, rng.Next(), busy, blocks));
            }
            else if (choice < 70)
            {
                var start = rng.Next(vol.Blocks - 16);
                var count = 1 + rng.Next(16);
                var blocks = Enumerable.Range(start, count).Select(b => (vol.Name, (long)b)).ToList();
                if (!TryClaim(busy, blocks))
                {
                    continue;
                }
                inflight.Add(ClearAsync(model, vol, start, count, rng.Next(3), busy, blocks));
            }
            else if (choice < 85)
            {
                inflight.Add(FlushAsync(model, vol.Volume));
            }
            else if (choice < 90)
            {
                await Quiet(inflight);
                var name = $"{vol.Name}@s{op}";
                var content = model.Keys.Where(k => k.Volume == vol.Name).ToDictionary(k => k.Block, k => model.Current(vol.Name, k.Block));
                if (nearlyFull)
                {
                    // Writes refused with ENOSPC (no background cleaner here) leave the model's
                    // latest value unwritten: the snapshot must hold what the volume holds now.
                    content = await ReadAllAsync(vol);
                    if (content == null)
                    {
                        continue;
                    }
                }
                var entry = (name, false, content);
                snapshots.Add(entry);
                try
                {
                    await pool.CreateSnapshotAsync(vol.Name, $"s{op}");
                    snapshots[^1] = (name, true, content);
                    model.FlushCompleted(model.FlushIssued());
                }
                catch (Exception) when (storage.Crashed)
                {
                }
            }
            else if (choice < 95)
            {
                inflight.Add(Swallow(storage, pool.CheckpointAsync()));
            }
            else if (nearlyFull && rng.Next(2) == 0)
            {
                // What the maintenance loop does near a full pool: hand the appender new holes.
                inflight.Add(Swallow(storage, pool.CleanAsync()));
            }
            else if (rng.Next(3) == 0)
            {
                // What the preparer does in the background: zero a free segment ahead of the log
                // (a segment's worth of writes, so rare enough to leave room for other crash points).
                inflight.Add(Swallow(storage, Task.Run(() => pool.Preparer!.PrepareOne())));
            }
            else if (op % 3 == 0)
            {
                // Rewrites the volume's scattered windows in order (relocation records and their
                // commits, beside the writes).
                inflight.Add(Swallow(storage, CountDefragAsync(pool.DefragmentAsync(vol.Name))));
            }
            else
            {
                inflight.Add(Swallow(storage, pool.CleanPassAsync(pool.GetStats().Segments)));
            }
        }
        await Quiet(inflight);
        storage.Crash();
        var defragmented = Volatile.Read(ref moved) > 0;
        var cleaned = pool.CleanerStats.SegmentsFreed > 0;
        var recycled = pool.GetStats().RecycledBlocksWritten > 0;
        await pool.AbandonAsync();

        var image = storage.CrashImage(rng, rng.Next(2) == 0 ? CrashMode.Prefix : CrashMode.Subset);
        var reopened = await TestPools.OpenAsync(image, capacity: 24L << 20, log: log);
        if (coverage != null)
        {
            var r = reopened.Recovery;
            coverage.FromCheckpoint += r.CheckpointBytes > 0 ? 1 : 0;
            coverage.MultiSegmentReplay += r.ReplayedSegments > 1 ? 1 : 0;
            coverage.TornOrDiscarded += r.DiscardedBatches > 0 ? 1 : 0;
            coverage.AfterCleaning += cleaned ? 1 : 0;
            coverage.Defragmented += defragmented ? 1 : 0;
            coverage.SnapshotsTaken += snapshots.Count > 0 ? 1 : 0;
            coverage.Recycled += recycled ? 1 : 0;
            coverage.InPlaceMismatched += r.InPlaceBlocksMismatched > 0 ? 1 : 0;
            coverage.ZeroedFreeSegments += storage.ZeroedBlocks > 0 ? 1 : 0;
        }
        try
        {
            await VerifyAsync(reopened, model, vols, snapshots);
            // The recovered pool must take new writes and survive a clean restart with them.
            var v = reopened.OpenVolume("b");
            await v.WriteAsync(0, TestPools.Pattern(seed, 4096), WriteFlags.None);
            await reopened.DisposeAsync();
            var again = await TestPools.OpenAsync(image.CleanImage(), capacity: 24L << 20);
            var back = new byte[4096];
            await again.OpenVolume("b").ReadAsync(0, back);
            Assert.That(back, Is.EqualTo(TestPools.Pattern(seed, 4096)), "write after recovery lost by a clean restart");
            await again.DisposeAsync();
        }
        catch
        {
            TestContext.Out.WriteLine($"seed {seed}: {reopened.Recovery}; the pool's log before and after the crash:");
            foreach (var line in logged)
            {
                TestContext.Out.WriteLine(line);
            }
            throw;
        }
    }

    /// <summary>
    /// Adds a third volume and writes every block of all three, then overwrites blocks at random
    /// with the cleaner's recycle passes in between, until writes go into recycled holes.
    /// </summary>
    private static async Task FillUntilRecyclingAsync(Pool pool, DurabilityModel model, List<Vol> vols, Random rng)
    {
        vols.Add(new("c", await pool.CreateVolumeAsync("c", 6 << 20), 1536));
        var none = new HashSet<(string, long)>();
        foreach (var vol in vols)
        {
            for (var b = 0; b < vol.Blocks; b += 16)
            {
                await WriteAsync(model, vol, b, 16, unaligned: false, fua: false, rng.Next(), none, []);
            }
        }
        for (var i = 0; i < 4000 && pool.GetStats().RecycledBlocksWritten == 0; i++)
        {
            var vol = vols[rng.Next(2)];
            await WriteAsync(model, vol, rng.Next(vol.Blocks), 1, unaligned: false, fua: false, rng.Next(), none, []);
            if (i % 64 == 63)
            {
                await pool.CleanAsync();
            }
        }
        await FlushAsync(model, vols[0].Volume);
    }

    /// <summary>Every block of a volume as it reads now, or null once the device is gone.</summary>
    private static async Task<Dictionary<long, byte[]>?> ReadAllAsync(Vol vol)
    {
        var all = new Dictionary<long, byte[]>();
        try
        {
            for (var b = 0; b < vol.Blocks; b++)
            {
                var buf = new byte[4096];
                await vol.Volume.ReadAsync(b * 4096L, buf);
                all[b] = buf;
            }
        }
        catch (BlockVolumeException)
        {
            return null;
        }
        return all;
    }

    private static async Task VerifyAsync(Pool pool, DurabilityModel model, List<Vol> vols, List<(string Name, bool Acked, Dictionary<long, byte[]> Content)> snapshots)
    {
        var buf = new byte[4096];
        foreach (var vol in vols)
        {
            var v = pool.OpenVolume(vol.Name);
            for (var b = 0; b < vol.Blocks; b++)
            {
                await v.ReadAsync(b * 4096L, buf);
                var problem = model.Check(vol.Name, b, buf);
                if (problem != null)
                {
                    // What the map says and what the model allows, to start the chase from.
                    var info = "";
                    lock (v.State.Lock)
                    {
                        v.State.Map.Visit(b, b + 1, -1, (in ExtentMap.MapPieceInfo p) => info += $" piece block {p.Block} n {p.Count} kind {p.Kind} phys {p.Phys} lsn {p.Lsn};");
                    }
                    problem += $"; map:{info} crc {Crc32C.Compute(buf):x8} first bytes {Convert.ToHexString(buf.AsSpan(0, 16))} model: {model.Describe(vol.Name, b)}";
                }
                Assert.That(problem, Is.Null, problem);
            }
        }
        foreach (var (name, acked, content) in snapshots)
        {
            if (!pool.TryOpenVolume(name, out var s))
            {
                Assert.That(acked, Is.False, $"acknowledged snapshot {name} is missing");
                continue;
            }
            for (var b = 0; b < s.Size / 4096; b++)
            {
                await s.ReadAsync(b * 4096L, buf);
                var expect = content.TryGetValue(b, out var c) ? c : new byte[4096];
                if (!buf.AsSpan().SequenceEqual(expect))
                {
                    var info = "";
                    lock (s.State.Lock)
                    {
                        s.State.Map.Visit(b, b + 1, -1, (in ExtentMap.MapPieceInfo p) => info += $" piece block {p.Block} n {p.Count} kind {p.Kind} phys {p.Phys} lsn {p.Lsn};");
                    }
                    Assert.Fail($"snapshot {name} block {b} differs from the volume at snapshot time; map:{info} crc {Crc32C.Compute(buf):x8}, expected crc {Crc32C.Compute(expect):x8}");
                }
            }
        }
    }

    private static async Task WriteAsync(DurabilityModel model, Vol vol, int start, int count, bool unaligned, bool fua, int seed, HashSet<(string, long)> busy, List<(string, long)> blocks)
    {
        var rng = new Random(seed);
        long offset = start * 4096L;
        var length = count * 4096;
        if (unaligned)
        {
            var skip = rng.Next(8) * 512;
            offset += skip;
            length = Math.Max(512, length - skip - rng.Next(8) * 512);
        }
        var data = new byte[length];
        rng.NextBytes(data);
        // Each block's new value, merged onto what it holds (every base first: nothing is issued
        // to the model unless the write is sent).
        var values = new List<(long Block, byte[] Value)>();
        for (var b = start; b < start + count; b++)
        {
            var from = Math.Max(offset, b * 4096L);
            var to = Math.Min(offset + length, (b + 1) * 4096L);
            if (from >= to)
            {
                continue;
            }
            var value = model.Current(vol.Name, b);
            if (to - from < 4096 && model.IsUncertain(vol.Name, b))
            {
                // The engine merges a partial write onto what the block holds, which after a
                // failed write the model does not know: read it (nothing else touches it now).
                try
                {
                    await vol.Volume.ReadAsync(b * 4096L, value);
                }
                catch (BlockVolumeException)
                {
                    Release(busy, blocks);
                    return;
                }
            }
            data.AsSpan((int)(from - offset), (int)(to - from)).CopyTo(value.AsSpan((int)(from - b * 4096L)));
            values.Add((b, value));
        }
        var tokens = values.Select(x => (x.Block, Token: model.Issue(vol.Name, x.Block, x.Value))).ToList();
        try
        {
            await vol.Volume.WriteAsync(offset, data, fua ? WriteFlags.Fua : WriteFlags.None);
            foreach (var (b, t) in tokens)
            {
                model.Acknowledge(vol.Name, b, t, fua);
            }
        }
        catch (BlockVolumeException)
        {
            // In flight at the crash, or refused for space: either value may be on disk; the
            // model keeps both.
            foreach (var (b, _) in tokens)
            {
                model.MarkUncertain(vol.Name, b);
            }
        }
        finally
        {
            Release(busy, blocks);
        }
    }

    private static async Task ClearAsync(DurabilityModel model, Vol vol, int start, int count, int how, HashSet<(string, long)> busy, List<(string, long)> blocks)
    {
        var tokens = blocks.Select(b => (b.Item2, model.Issue(vol.Name, b.Item2, null))).ToList();
        try
        {
            var task = how switch
            {
                0 => vol.Volume.TrimAsync(start * 4096L, count * 4096L),
                1 => vol.Volume.WriteZeroesAsync(start * 4096L, count * 4096L, mayDeallocate: false),
                _ => vol.Volume.WriteZeroesAsync(start * 4096L, count * 4096L, mayDeallocate: true),
            };
            await task;
            foreach (var (b, t) in tokens)
            {
                model.Acknowledge(vol.Name, b, t, fua: false);
            }
        }
        catch (BlockVolumeException)
        {
            foreach (var (b, _) in tokens)
            {
                model.MarkUncertain(vol.Name, b);
            }
        }
        finally
        {
            Release(busy, blocks);
        }
    }

    private static bool TryClaim(HashSet<(string, long)> busy, List<(string, long)> blocks)
    {
        lock (busy)
        {
            if (blocks.Any(busy.Contains))
            {
                return false;
            }
            blocks.ForEach(b => busy.Add(b));
            return true;
        }
    }

    private static void Release(HashSet<(string, long)> busy, List<(string, long)> blocks)
    {
        lock (busy)
        {
            blocks.ForEach(b => busy.Remove(b));
        }
    }

    private static async Task FlushAsync(DurabilityModel model, EngineVolume v)
    {
        var issued = model.FlushIssued();
        try
        {
            await v.FlushAsync();
            model.FlushCompleted(issued);
        }
        catch (BlockVolumeException)
        {
        }
    }

    private static async Task Swallow(FaultStorage storage, Task t)
    {
        try
        {
            await t;
        }
        catch (Exception) when (storage.Crashed)
        {
        }
    }

    private static async Task Quiet(List<Task> inflight)
    {
        await Task.WhenAll(inflight);
        inflight.Clear();
    }
}
