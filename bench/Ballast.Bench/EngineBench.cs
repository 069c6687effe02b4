using System.Diagnostics;
using Ballast.Engine;
using Ballast.Engine.Buffers;
using Ballast.Engine.Volumes;

namespace Ballast.Bench;

/// <summary>The engine on a real pool file, without any protocol in front of it.</summary>
internal static class EngineBench
{
    private const int Block = 4096;

    /// <summary>4 KiB random writes, <c>qd</c> in flight, a FLUSH after every <c>flush-every</c> completed writes.</summary>
    public static async Task<int> RandomWriteAsync(BenchArgs a)
    {
        var dir = a.Get("dir", ".");
        var volumeBytes = (long)(a.Get("volume-gib", 2.0) * (1L << 30));
        var poolBytes = (long)(a.Get("pool-gib", 8.0) * (1L << 30));
        var seconds = a.Get("seconds", 30.0);
        var qd = (int)a.Get("qd", 32);
        var flushEvery = (int)a.Get("flush-every", 32);
        var path = Path.Combine(dir, "bench-pool.dat");
        File.Delete(path);
        var recycle = a.Get("recycle", 1.0) != 0;
        await using var pool = await Pool.OpenAsync(new PoolOptions
        {
            Path = path,
            Capacity = poolBytes,
            RecycleHoles = recycle,
            Log = Environment.GetEnvironmentVariable("BALLAST_BENCH_LOG") == "1" ? (l, m) => Console.Error.WriteLine($"[{l}] {m}") : null,
        });
        var v = await pool.CreateVolumeAsync("bench", volumeBytes);
        var blocks = volumeBytes / Block;

        // Lay the volume out once, like fio does with its file, so every write is an overwrite.
        using (var fill = new AlignedBuffer(1 << 20))
        {
            Random.Shared.NextBytes(fill.Span);
            for (long off = 0; off < volumeBytes; off += 1 << 20)
            {
                await v.WriteAsync(off, fill.Memory, WriteFlags.None);
            }
            await v.FlushAsync();
        }

        long completed = 0;
        var stop = Stopwatch.StartNew();
        var deadline = TimeSpan.FromSeconds(seconds);
        var warmup = TimeSpan.FromSeconds(Math.Min(5, seconds / 4));
        long measuredStartOps = 0;
        long allocStart = 0;
        var gen2Start = 0;
        var cpuStart = TimeSpan.Zero;
        var measureFrom = TimeSpan.Zero;
        var measuring = 0;
        var latencies = new long[1 << 20];
        long latCount = 0;

        async Task Worker(int id)
        {
            using var buf = new AlignedBuffer(Block);
            var rng = new Random(id);
            rng.NextBytes(buf.Span);
            while (stop.Elapsed < deadline)
            {
                var off = rng.NextInt64(blocks) * Block;
                var t0 = Stopwatch.GetTimestamp();
                await v.WriteAsync(off, buf.Memory, WriteFlags.None);
                var n = Interlocked.Increment(ref completed);
                if (n % flushEvery == 0)
                {
                    await v.FlushAsync();
                }
                if (Volatile.Read(ref measuring) == 1)
                {
                    var i = Interlocked.Increment(ref latCount);
                    if (i < latencies.Length)
                    {
                        latencies[i] = Stopwatch.GetTimestamp() - t0;
                    }
                }
                if (n % 1024 == 0 && Volatile.Read(ref measuring) == 0 && stop.Elapsed >= warmup && Interlocked.CompareExchange(ref measuring, 1, 0) == 0)
                {
                    measuredStartOps = n;
                    measureFrom = stop.Elapsed;
                    allocStart = GC.GetTotalAllocatedBytes(false);
                    gen2Start = GC.CollectionCount(2);
                    cpuStart = Process.GetCurrentProcess().TotalProcessorTime;
                }
            }
        }

        var workers = Enumerable.Range(0, qd).Select(i => Task.Run(() => Worker(i))).ToArray();
        await Task.WhenAll(workers);
        var elapsed = stop.Elapsed - measureFrom;
        var ops = Interlocked.Read(ref completed) - measuredStartOps;
        var iops = ops / elapsed.TotalSeconds;
        var alloc = (GC.GetTotalAllocatedBytes(false) - allocStart) / (double)ops;
        var gen2 = GC.CollectionCount(2) - gen2Start;
        var cpuUs = (Process.GetCurrentProcess().TotalProcessorTime - cpuStart).TotalMicroseconds / ops;
        var lat = latencies.AsSpan(1, (int)Math.Min(latCount, latencies.Length - 1)).ToArray();
        Array.Sort(lat);
        var toUs = 1e6 / Stopwatch.Frequency;
        var s = pool.GetStats();
        Console.WriteLine($"engine randwrite 4k qd{qd} flush/{flushEvery}: {iops:F0} IOPS over {elapsed.TotalSeconds:F1} s; "
            + $"latency mean {lat.Average() * toUs:F0} us p99 {lat[(int)(lat.Length * 0.99)] * toUs:F0} us; "
            + $"{cpuUs:F1} us CPU/IO; {alloc:F1} B allocated/IO; {gen2} gen2 GCs; "
            + $"batches {s.Batches}, syncs {s.Syncs}, cleaner moved {s.CleanerBytesMoved >> 20} MiB in {s.CleanerReads} reads");
        var cs = pool.CleanerStats;
        Console.WriteLine($"cleaner: {cs.Passes} passes, mark {cs.MarkMs / 1000:F1} s, redirect {cs.RedirectMs / 1000:F1} s (longest {cs.MaxRedirectMs:F1} ms under a volume lock); {s.WritesWaitedForSpace} writes waited for space; {s.RecycledBlocksWritten} blocks written into recycled holes");
        var ap = pool.AppenderTimes;
        Console.WriteLine($"appender: busy {ap.Busy.TotalSeconds:F1} s, pwrite {ap.Write.TotalSeconds:F1} s, fdatasync {ap.Sync.TotalSeconds:F1} s over {stop.Elapsed.TotalSeconds:F1} s");
        Console.WriteLine($"engine_iops={iops:F0}");
        return 0;
    }

    /// <summary>
    /// Write amplification: a volume of <c>fill</c> x the pool is written sequentially, then
    /// overwritten <c>overwrites</c> times its size in random 4 KiB blocks. WA = device bytes /
    /// client bytes during the overwrite phase (log headers, cleaner copies and checkpoints counted).
    /// </summary>
    public static async Task<int> WriteAmplificationAsync(BenchArgs a)
    {
        var dir = a.Get("dir", ".");
        var poolBytes = (long)a.Get("pool-mib", 1024.0) << 20;
        var fill = a.Get("fill", 0.8);
        var overwrites = a.Get("overwrites", 3.0);
        var segment = (int)(a.Get("segment-mib", 0.0) * (1 << 20));
        var defaults = new PoolOptions { Path = "" };
        var startFree = a.Get("start-free", defaults.CleanerStartFree);
        var targetFree = a.Get("target-free", defaults.CleanerTargetFree);
        var recycle = a.Get("recycle", 1.0) != 0;
        var path = Path.Combine(dir, "bench-wa.dat");
        File.Delete(path);
        await using var pool = await Pool.OpenAsync(new PoolOptions
        {
            Path = path,
            Capacity = poolBytes,
            SegmentSize = segment,
            CleanerBytesPerSecond = 1L << 40,
            CleanerStartFree = startFree,
            CleanerTargetFree = targetFree,
            RecycleHoles = recycle,
            Log = Environment.GetEnvironmentVariable("BALLAST_BENCH_LOG") == "1" ? (l, m) => Console.Error.WriteLine($"[{l}] {m}") : null,
        });
        var volumeBytes = (long)(pool.Capacity * fill) / Block * Block;
        var v = await pool.CreateVolumeAsync("wa", volumeBytes);
        using (var buf = new AlignedBuffer(1 << 20))
        {
            Random.Shared.NextBytes(buf.Span);
            for (long off = 0; off < volumeBytes; off += 1 << 20)
            {
                await v.WriteAsync(off, buf.Memory[..(int)Math.Min(1 << 20, volumeBytes - off)], WriteFlags.None);
            }
        }
        var before = pool.GetStats();
        var blocks = volumeBytes / Block;
        var total = (long)(overwrites * blocks);
        long done = 0;
        var sw = Stopwatch.StartNew();
        async Task Worker(int id)
        {
            using var buf = new AlignedBuffer(Block);
            var rng = new Random(id);
            rng.NextBytes(buf.Span);
            while (Interlocked.Increment(ref done) <= total)
            {
                while (true)
                {
                    try
                    {
                        await v.WriteAsync(rng.NextInt64(blocks) * Block, buf.Memory, WriteFlags.None);
                        break;
                    }
                    catch (BlockVolumeException e) when (e.Error == BlockError.NoSpace)
                    {
                        // The cleaner is behind: wait for it, as a client would retry.
                        await Task.Delay(5);
                    }
                }
            }
        }
        var run = Task.WhenAll(Enumerable.Range(0, 32).Select(i => Task.Run(() => Worker(i))));
        while (await Task.WhenAny(run, Task.Delay(5000)) != run)
        {
            var st = pool.GetStats();
            Console.Error.WriteLine($"  {sw.Elapsed.TotalSeconds:F0} s: {Math.Min(done, total) * 100 / total}% written, free {st.FreeSegments}/{st.Segments} segments (log {st.LogSegments}, checkpoint {st.CheckpointSegments}, reclaimable {st.ReclaimableBytes >> 20} MiB), cleaner passes {st.CleanerPasses}, moved {st.CleanerBytesMoved >> 20} MiB");
        }
        await run;
        await v.FlushAsync();
        var after = pool.GetStats();
        var client = after.ClientBytesWritten - before.ClientBytesWritten;
        var device = after.DeviceBytesWritten - before.DeviceBytesWritten;
        var moved = after.CleanerBytesMoved - before.CleanerBytesMoved;
        var wa = (double)device / client;
        Console.WriteLine($"write amplification: pool {poolBytes >> 20} MiB, volume {volumeBytes >> 20} MiB ({fill:P0}), {overwrites}x random 4 KiB overwrite in {sw.Elapsed.TotalSeconds:F1} s: "
            + $"client {client >> 20} MiB, device {device >> 20} MiB (cleaner moved {moved >> 20} MiB, {after.CleanerPasses - before.CleanerPasses} passes; "
            + $"{(after.RecycledBlocksWritten - before.RecycledBlocksWritten) * Block >> 20} MiB written into recycled holes; {after.Batches - before.Batches} batches), WA {wa:F2}");
        Console.WriteLine($"wa={wa:F2}");
        return 0;
    }
}
