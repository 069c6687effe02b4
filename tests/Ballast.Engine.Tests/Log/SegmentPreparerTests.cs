using Ballast.Engine.Buffers;
using Ballast.Engine.Interop;
using Ballast.Engine.Log;
using Ballast.Engine.Storage;
using Ballast.Engine.Tests.FaultInjection;
using Ballast.Engine.Volumes;

namespace Ballast.Engine.Tests.Log;

/// <summary>
/// Free segments are zeroed ahead of the log (so its writes land in written space), a window at
/// a time; the log takes prepared segments first; zeroing never touches a segment in use, and a
/// full filesystem stops it without stopping the pool.
/// </summary>
public class SegmentPreparerTests
{
    private const int Seg = TestPools.SegmentSize;

    private static List<int> PreparedFree(Pool pool) =>
        [.. Enumerable.Range(0, pool.Segments.Count).Where(i => pool.Segments[i].State == SegmentState.Free && pool.Segments[i].Prepared)];

    private static void PrepareAll(Pool pool)
    {
        for (var i = 0; i < 10_000 && pool.Preparer!.PrepareOne() >= 0; i++)
        {
        }
    }

    [Test]
    public async Task A_window_of_free_segments_is_zeroed_and_the_log_moves_into_prepared_segments_first()
    {
        var storage = new FaultStorage();
        await using var pool = await Pool.OpenAsync(TestPools.Options(storage, prepareAheadBytes: 4 * Seg));
        // Hold back the lowest free segment as if being prepared, so it stays unprepared below the window.
        var skipped = pool.Segments.ClaimForPreparing(window: int.MaxValue, keepFree: 0);
        PrepareAll(pool);
        pool.Segments.EndPreparing(skipped, prepared: false);

        var window = PreparedFree(pool);
        Assert.That(window, Has.Count.EqualTo(4));
        Assert.That(window, Is.All.GreaterThan(skipped));
        Assert.That(storage.ZeroedBlocks, Is.EqualTo(4 * Seg / 4096));
        foreach (var s in window)
        {
            Assert.That(storage.FirstUnwritten(pool.Layout.SegmentOffset(s), Seg), Is.EqualTo(-1), $"segment {s} was not fully written");
        }

        var v = await pool.CreateVolumeAsync("v", 8 << 20);
        var data = TestPools.Pattern(1, 3 * Seg);
        await v.WriteAsync(0, data, WriteFlags.None);
        await v.FlushAsync();

        Assert.That(pool.Segments.StateOf(window[0]), Is.EqualTo(SegmentState.Log), "the log did not take the first prepared segment");
        Assert.That(pool.Segments.StateOf(skipped), Is.EqualTo(SegmentState.Free), "the log took an unprepared segment while prepared ones were free");
        var back = new byte[data.Length];
        await v.ReadAsync(0, back);
        Assert.That(back, Is.EqualTo(data));

        PrepareAll(pool);
        Assert.That(pool.GetStats().PreparedFreeSegments, Is.EqualTo(4), "the window was not topped up after the log used it");
    }

    [TestCase(0L, 0L, true, TestName = "An idle log: zeroing is free")]
    [TestCase(8L << 20, 0L, true, TestName = "A quiet log (8 MiB in a second)")]
    [TestCase(280L << 20, 2240L, true, TestName = "4 KiB writes, a flush every 32 (8 syncs per MiB)")]
    [TestCase(1024L << 20, 32L, false, TestName = "A stream of 1 MiB writes, a flush every 32")]
    [TestCase(512L << 20, 2048L, true, TestName = "Exactly at the threshold (4 syncs per MiB)")]
    public void Zeroing_runs_while_the_log_is_quiet_or_syncs_often_for_its_bytes(long logBytes, long syncs, bool expected)
    {
        Assert.That(SegmentPreparer.WorthIt(logBytes, syncs, TimeSpan.FromSeconds(1)), Is.EqualTo(expected));
    }

    [Test]
    public void A_segment_being_zeroed_is_never_handed_out_and_counts_as_free_only_after()
    {
        var table = new SegmentTable(new PoolLayout(Seg, 8));
        var claimed = table.ClaimForPreparing(window: int.MaxValue, keepFree: 0);
        Assert.That(claimed, Is.EqualTo(0), "the lowest unprepared free segment is claimed first");
        Assert.That(table.FreeCount, Is.EqualTo(7));
        var handedOut = new List<int>();
        for (int s; (s = table.Allocate(SegmentState.Log, 0)) >= 0;)
        {
            handedOut.Add(s);
        }
        Assert.That(handedOut, Is.EquivalentTo(Enumerable.Range(1, 7)), "a claimed segment was handed out");
        Assert.That(table.ClaimForPreparing(int.MaxValue, 0), Is.EqualTo(-1), "a segment in use was claimed for zeroing");
        table.EndPreparing(claimed, prepared: true);
        Assert.That(table.FreeCount, Is.EqualTo(1));
        Assert.That(table.Allocate(SegmentState.Log, 0), Is.EqualTo(claimed));
    }

    [Test]
    public async Task Zeroing_beside_writes_and_cleaning_never_touches_a_segment_in_use()
    {
        // Garbage over whole free segments, used blocks too: stronger than real zeroing.
        var storage = new FaultStorage { ScribbleWhenZeroing = true };
        var capacity = 32L << 20;
        var pool = await Pool.OpenAsync(TestPools.Options(storage, capacity, prepareAheadBytes: capacity));
        var v = await pool.CreateVolumeAsync("v", 8 << 20);
        var blocks = (int)(v.Size / 4096);
        var expect = new Dictionary<int, byte[]>();
        using var stop = new CancellationTokenSource();
        long zeroed = 0;
        var preparing = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                var n = pool.Preparer!.PrepareOne();
                zeroed += Math.Max(0, n);
                await Task.Yield();
            }
        });
        var rng = new Random(7);
        for (var i = 0; i < 6000; i++)
        {
            var b = rng.Next(blocks);
            var d = TestPools.Pattern(i, 4096);
            await v.WriteAsync(b * 4096L, d, WriteFlags.None);
            expect[b] = d;
            if (i % 250 == 249)
            {
                await v.FlushAsync();
                await pool.CleanPassAsync(16);
                await pool.CheckpointAsync();
            }
        }
        await v.FlushAsync();
        await stop.CancelAsync();
        await preparing;
        Assert.That(zeroed, Is.GreaterThan(0), "the preparer zeroed nothing");
        Assert.That(storage.ScribbledUsedBlocks, Is.GreaterThan(0), "no segment the log had used was claimed and overwritten");

        async Task Verify(IBlockVolume vol, string when)
        {
            var buf = new byte[4096];
            foreach (var (b, d) in expect)
            {
                await vol.ReadAsync(b * 4096L, buf);
                Assert.That(buf, Is.EqualTo(d), $"block {b} {when}");
            }
        }
        await Verify(v, "while open");
        var image = storage.CleanImage();
        await pool.AbandonAsync();
        await using var reopened = await Pool.OpenAsync(TestPools.Options(image, capacity));
        Assert.That(reopened.TryOpenVolume("v", out var again), Is.True);
        await Verify(again!, "after reopening");
    }

    [Test]
    public async Task A_full_filesystem_stops_preparation_and_the_pool_goes_on()
    {
        var storage = new FaultStorage();
        var logged = new List<string>();
        await using var pool = await Pool.OpenAsync(TestPools.Options(storage, log: (_, m) => { lock (logged) { logged.Add(m); } }));
        storage.FaultErrno = Libc.ENOSPC;
        storage.FailWrites = 1;
        Assert.That(pool.Preparer!.PrepareOne(), Is.EqualTo(-1));
        Assert.That(pool.Preparer.PrepareOne(), Is.EqualTo(-1), "preparation went on after the filesystem was full");
        Assert.That(logged, Has.Some.Contains("stopped preparing free segments"));
        Assert.That(pool.GetStats().PreparedFreeSegments, Is.Zero);

        var v = await pool.CreateVolumeAsync("v", 4 << 20);
        var data = TestPools.Pattern(3, 2 * Seg);
        await v.WriteAsync(0, data, WriteFlags.Fua);
        var back = new byte[data.Length];
        await v.ReadAsync(0, back);
        Assert.That(back, Is.EqualTo(data));
    }

    [Test]
    public void A_pool_file_zeroes_only_space_never_written_and_keeps_what_was()
    {
        var path = Path.Combine(TestContext.CurrentContext.WorkDirectory, "prepare-" + Guid.NewGuid().ToString("N")[..8]);
        try
        {
            const long size = 8L << 20;
            using var s = FileStorage.Open(path, size, readThreads: 1, useIoUring: false);
            s.Allocate(0, size);
            Assume.That(s.FirstUnwritten(0, size), Is.EqualTo(0), "this filesystem does not report unwritten extents (SEEK_HOLE)");
            using var data = new AlignedBuffer(1 << 20);
            data.Span.Fill(0x5A);
            s.Write(2L << 20, data.Span);

            Assert.That(s.FirstUnwritten(2L << 20, 1 << 20), Is.EqualTo(-1));
            Assert.That(s.ZeroUnwritten(0, size), Is.EqualTo(size - (1 << 20)));
            Assert.That(s.FirstUnwritten(0, size), Is.EqualTo(-1));
            Assert.That(s.ZeroUnwritten(0, size), Is.Zero, "a second pass found space to zero");

            using var back = new AlignedBuffer(1 << 20);
            s.Read(2L << 20, back.Span);
            Assert.That(back.Span.ToArray(), Is.EqualTo(data.Span.ToArray()), "zeroing overwrote written data");
            s.Read(5L << 20, back.Span);
            Assert.That(back.Span.ContainsAnyExcept((byte)0), Is.False);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Test]
    public async Task A_pool_on_a_file_keeps_its_window_prepared_in_the_background()
    {
        var path = Path.Combine(TestContext.CurrentContext.WorkDirectory, "prepare-pool-" + Guid.NewGuid().ToString("N")[..8]);
        try
        {
            await using var pool = await Pool.OpenAsync(new PoolOptions
            {
                Path = path,
                Capacity = 64L << 20,
                SegmentSize = Seg,
                PrepareAheadBytes = 8 * Seg,
                ScrubAfterCrash = false,
            });
            Assume.That(pool.Storage.FirstUnwritten(pool.Layout.SegmentOffset(pool.Segments.Count - 1), Seg), Is.Not.EqualTo(-1),
                "this filesystem does not report unwritten extents (SEEK_HOLE)");
            for (var i = 0; i < 200 && pool.GetStats().PreparedFreeSegments < 8; i++)
            {
                await Task.Delay(50);
            }
            var window = PreparedFree(pool);
            Assert.That(window, Has.Count.EqualTo(8));
            foreach (var s in window)
            {
                Assert.That(pool.Storage.FirstUnwritten(pool.Layout.SegmentOffset(s), Seg), Is.EqualTo(-1), $"segment {s} is not written on the file");
            }
            Assert.That(new FileInfo(path).Length, Is.GreaterThanOrEqualTo(64L << 20));
            Assert.That(pool.GetStats().PreparedBytesZeroed, Is.LessThanOrEqualTo(9L * Seg), "more than the window was zeroed: the file should stay thin");
        }
        finally
        {
            File.Delete(path);
        }
    }
}
