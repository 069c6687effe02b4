using Ballast.Engine.Tests.FaultInjection;
using Ballast.Engine.Volumes;

namespace Ballast.Engine.Tests.Model;

/// <summary>
/// Random sequences of every volume operation, checked against a plain in-memory copy of every
/// volume and snapshot. Requests are sequential, so the reference is exact. Restarts alternate
/// between clean shutdowns and crashes right after a flush (which must lose nothing).
/// </summary>
public class ModelBasedTests
{
    [Test]
    public async Task Random_operations_match_the_reference([Range(1, 24)] int index)
    {
        // BALLAST_MODEL_SEED_BASE shifts the seeds to explore beyond the ones CI runs.
        var seed = index + int.Parse(Environment.GetEnvironmentVariable("BALLAST_MODEL_SEED_BASE") ?? "0");
        try
        {
            await RunAsync(seed, 250);
        }
        catch (Exception e) when (e is not SuccessException)
        {
            Assert.Fail($"model seed {seed}: {e}");
        }
    }

    private static async Task RunAsync(int seed, int operations)
    {
        var rng = new Random(seed);
        var storage = new FaultStorage();
        const long capacity = 40L << 20;
        var pool = await TestPools.OpenAsync(storage, capacity);
        var model = new Dictionary<string, byte[]>();
        var readOnly = new HashSet<string>();
        var log = new List<string>();
        try
        {
            for (var op = 0; op < operations; op++)
            {
                var names = model.Keys.Where(n => !readOnly.Contains(n)).ToList();
                var choice = rng.Next(100);
                if (names.Count == 0 || choice < 4)
                {
                    if (model.Count < 6)
                    {
                        var name = $"v{op}";
                        var size = (1 + rng.Next(8)) * 262144L + (rng.Next(2) == 0 ? 0 : 512);
                        var lbs = size % 4096 == 0 && rng.Next(2) == 0 ? 4096 : 512;
                        log.Add($"create {name} {size} lbs {lbs}");
                        await pool.CreateVolumeAsync(name, size, lbs);
                        model[name] = new byte[size];
                    }
                    continue;
                }
                var vname = names[rng.Next(names.Count)];
                var v = pool.OpenVolume(vname);
                var m = model[vname];
                var (offset, length) = Range(rng, m.Length);
                switch (choice)
                {
                    case < 45:
                        var data = new byte[length];
                        rng.NextBytes(data);
                        var fua = rng.Next(4) == 0;
                        log.Add($"write {vname} {offset}+{length}{(fua ? " fua" : "")}");
                        await v.WriteAsync(offset, data, fua ? WriteFlags.Fua : WriteFlags.None);
                        data.CopyTo(m, offset);
                        break;
                    case < 53:
                        log.Add($"trim {vname} {offset}+{length}");
                        await v.TrimAsync(offset, length);
                        Array.Clear(m, (int)offset, length);
                        break;
                    case < 60:
                        var dealloc = rng.Next(2) == 0;
                        log.Add($"zero {vname} {offset}+{length} dealloc={dealloc}");
                        await v.WriteZeroesAsync(offset, length, dealloc);
                        Array.Clear(m, (int)offset, length);
                        break;
                    case < 66:
                        log.Add($"flush {vname}");
                        await v.FlushAsync();
                        break;
                    case < 72:
                        var snap = $"s{op}";
                        log.Add($"snapshot {vname}@{snap}");
                        await pool.CreateSnapshotAsync(vname, snap);
                        model[$"{vname}@{snap}"] = (byte[])m.Clone();
                        readOnly.Add($"{vname}@{snap}");
                        break;
                    case < 76 when readOnly.Count > 0 && model.Count < 8:
                        var source = readOnly.ElementAt(rng.Next(readOnly.Count));
                        var clone = $"c{op}";
                        log.Add($"clone {source} -> {clone}");
                        await pool.CloneAsync(source, clone);
                        model[clone] = (byte[])model[source].Clone();
                        break;
                    case < 80:
                        var newSize = Math.Max(512, m.Length + (rng.Next(3) - 1) * 262144L);
                        newSize = Math.Max(v.LogicalBlockSize, newSize - newSize % v.LogicalBlockSize);
                        log.Add($"resize {vname} {m.Length} -> {newSize}");
                        await pool.ResizeVolumeAsync(vname, newSize, force: true);
                        var resized = new byte[newSize];
                        Array.Copy(m, resized, Math.Min(m.Length, newSize));
                        model[vname] = resized;
                        break;
                    case < 83:
                        var victim = model.Keys.ElementAt(rng.Next(model.Count));
                        log.Add($"delete {victim}");
                        await pool.DeleteVolumeAsync(victim, withSnapshots: true);
                        foreach (var k in model.Keys.Where(k => k == victim || k.StartsWith(victim + "@", StringComparison.Ordinal)).ToList())
                        {
                            model.Remove(k);
                            readOnly.Remove(k);
                        }
                        break;
                    case < 87:
                        log.Add("checkpoint");
                        await pool.CheckpointAsync();
                        break;
                    case < 90:
                        log.Add("clean");
                        await pool.CleanPassAsync(pool.GetStats().Segments);
                        break;
                    case < 95:
                        var crash = rng.Next(2) == 0;
                        log.Add(crash ? "flush + crash + reopen" : "restart");
                        if (crash)
                        {
                            await v.FlushAsync();
                            storage.Crash();
                            await pool.AbandonAsync();
                            storage = storage.CrashImage(rng, CrashMode.Subset);
                        }
                        else
                        {
                            await pool.DisposeAsync();
                            storage = storage.CleanImage();
                        }
                        pool = await TestPools.OpenAsync(storage, capacity);
                        log.Add($"  -> {pool.Recovery}");
                        await VerifyAllAsync(pool, model);
                        break;
                    default:
                        var buf = new byte[length];
                        await v.ReadAsync(offset, buf);
                        Assert.That(buf.AsSpan().SequenceEqual(m.AsSpan((int)offset, length)), Is.True, $"read {vname} {offset}+{length}");
                        break;
                }
            }
            await VerifyAllAsync(pool, model);
            await pool.DisposeAsync();
        }
        catch
        {
            TestContext.Out.WriteLine($"model seed {seed}, last operations:\n  " + string.Join("\n  ", log.TakeLast(int.Parse(Environment.GetEnvironmentVariable("BALLAST_MODEL_LOG") ?? "20"))));
            throw;
        }
    }

    private static (long Offset, int Length) Range(Random rng, int size)
    {
        var aligned = rng.Next(3) != 0;
        var unit = aligned ? 4096 : 1;
        var max = Math.Min(size, 300_000);
        var length = Math.Max(1, rng.Next(1, max + 1) / unit * unit);
        length = Math.Min(length, size);
        var offset = rng.Next(0, size - length + 1) / unit * unit;
        return (offset, length);
    }

    private static async Task VerifyAllAsync(Pool pool, Dictionary<string, byte[]> model)
    {
        Assert.That(pool.ListVolumes().Select(v => v.Name).Order(), Is.EqualTo(model.Keys.Order()));
        foreach (var (name, content) in model)
        {
            var v = pool.OpenVolume(name);
            Assert.That(v.Size, Is.EqualTo(content.Length), $"size of {name}");
            var buf = new byte[content.Length];
            await v.ReadAsync(0, buf);
            var firstDiff = buf.AsSpan().CommonPrefixLength(content);
            Assert.That(firstDiff, Is.EqualTo(content.Length), $"{name} differs from the reference at byte {firstDiff}");
            var ranges = new AllocationRange[4096];
            var n = v.GetAllocation(0, content.Length, ranges);
            for (var i = 0; i < n; i++)
            {
                if (ranges[i].State != AllocationState.Data)
                {
                    Assert.That(content.AsSpan((int)ranges[i].Offset, (int)ranges[i].Length).ContainsAnyExcept((byte)0), Is.False,
                        $"{name}: {ranges[i]} reported as zero but the reference holds data there");
                }
            }
        }
    }
}
