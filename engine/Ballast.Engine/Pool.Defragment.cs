using Ballast.Engine.Buffers;
using Ballast.Engine.Cleaning;
using Ballast.Engine.Log;
using Ballast.Engine.Maps;
using Ballast.Engine.Volumes;

namespace Ballast.Engine;

/// <summary>
/// Defragmentation. A volume written at random lies in the log in write order, so reading it in
/// volume order costs one device read per block. This rewrites each badly scattered window of
/// the volume, in volume order, as relocation records (the cleaner's), redirects the maps and
/// logs a <see cref="RecordKind.MoveCommit"/>, step by step. Nothing is freed here: the old
/// copies become dead blocks the cleaner reclaims, so a crash at any point leaves every map
/// pointing at valid data, and replay redoes a step exactly when its commit is in the log.
/// The maps are redirected when the commit is applied, on the log's writer in log order, so the
/// live maps see client records before and after it exactly as replay does (maps merge
/// neighbouring entries, so the order matters). Every step that appended a copy logs its
/// commit, even when the copy failed part way, and a commit that fails is followed by one that
/// moves nothing (or a checkpoint): replay hands relocation records to the next commit it meets,
/// which must be their own.
/// </summary>
public sealed partial class Pool
{
    /// <summary>Judged and moved as a unit: the map's window, so no map entry crosses one.</summary>
    public const int DefragWindowBlocks = ExtentMap.WindowBlocks;

    /// <summary>A window is rewritten when its data forms at least this many runs (a mean run under 256 KiB when full).</summary>
    public const int DefragMinRuns = 16;

    /// <summary>Blocks one step moves at most (one commit, one walk of the maps): 16 MiB.</summary>
    internal const int DefragStepBlocks = 4 * DefragWindowBlocks;

    /// <summary>Windows holding data one step looks at, at most: a step's locks stay short on a volume with little to move.</summary>
    private const int DefragScanWindows = 256;

    private const int DefragReadsInFlight = 16;

    /// <summary>
    /// Rewrites the scattered windows of <paramref name="name"/> in volume order. Runs beside
    /// client I/O; the maintenance and structure locks are held one step at a time, so the
    /// cleaner and checkpoints go on between steps. Stops early, with the reason in the report,
    /// when the pool is short of free space or the volume goes away. With
    /// <paramref name="bytesPerSecond"/> above 0 it copies no faster than that (between steps),
    /// leaving more of the device to clients.
    /// </summary>
    public async Task<DefragReport> DefragmentAsync(string name, long bytesPerSecond = 0, CancellationToken ct = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytesPerSecond);
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        var v = FindState(name);
        // Closing the pool stops it between steps (waits included).
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct, _stop.Token);
        ct = stop.Token;
        var report = new DefragReport();
        var usageBefore = GetUsage(name);
        report.RunsBefore = usageBefore.DataRuns;
        Report(PoolLogLevel.Information, $"volume {name}: defragmenting {usageBefore.DataBytes >> 20} MiB of data in {usageBefore.DataRuns} runs on the device");
        var plan = new List<(long Phys, int Count)>();
        var copies = new List<(long Old, int Count, long New)>();
        using var buffer = new AlignedBuffer(DefragStepBlocks << PoolLayout.BlockShift);
        try
        {
            await DefragStepsAsync(v, bytesPerSecond, plan, copies, buffer, report, ct).ConfigureAwait(false);
        }
        catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException)
        {
            Report(PoolLogLevel.Information, $"volume {name}: defragmentation stopped (cancelled, or the pool is closing) after {report.BlocksMoved << PoolLayout.BlockShift >> 20} MiB moved; what moved stays moved");
            throw;
        }
        if (!v.Deleted)
        {
            report.RunsAfter = GetUsage(name).DataRuns;
        }
        Report(PoolLogLevel.Information, $"volume {name}: defragmented {report.WindowsMoved} of {report.WindowsScanned} windows, {report.BlocksMoved << PoolLayout.BlockShift >> 20} MiB moved, runs on the device {report.RunsBefore} -> {report.RunsAfter}, maps redirected in {report.RedirectMs:F0} ms (at most {report.MaxRedirectMs:F1} ms a step)"
            + (report.StoppedBecause is { } why ? $"; stopped: {why}" : ""));
        return report;
    }

    /// <summary>The steps of one run, from the volume's start to its end or a stop.</summary>
    private async Task DefragStepsAsync(VolumeState v, long bytesPerSecond, List<(long Phys, int Count)> plan, List<(long Old, int Count, long New)> copies, AlignedBuffer buffer, DefragReport report, CancellationToken ct)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var spaceWaits = 0;
        for (long next = 0; next < EndBlock(v) && report.StoppedBecause == null;)
        {
            ct.ThrowIfCancellationRequested();
            ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
            await _maintenance.WaitAsync(ct).ConfigureAwait(false);
            try
            {
                await _structure.WaitAsync(ct).ConfigureAwait(false);
                try
                {
                    var moved = report.BlocksMoved;
                    next = await DefragStepAsync(v, next, plan, copies, buffer, report).ConfigureAwait(false);
                    if (report.BlocksMoved > moved)
                    {
                        spaceWaits = 0;
                    }
                }
                finally
                {
                    _structure.Release();
                }
            }
            finally
            {
                _maintenance.Release();
            }
            if (bytesPerSecond > 0)
            {
                var due = TimeSpan.FromSeconds((double)(report.BlocksMoved << PoolLayout.BlockShift) / bytesPerSecond);
                if (due > clock.Elapsed)
                {
                    await Task.Delay(due - clock.Elapsed, ct).ConfigureAwait(false);
                }
            }
            if (report.StoppedBecause == null && report.WaitForSpace)
            {
                report.WaitForSpace = false;
                // Client writes may take what the cleaner frees as fast as it frees it: a few
                // tries without progress, then stop rather than compete for ever.
                if (++spaceWaits > 8 || !await WaitForDefragSpaceAsync(report.NeedBlocks, ct).ConfigureAwait(false))
                {
                    report.ShortOfSpace = true;
                    report.StoppedBecause = $"the pool is short of free space ({Segments.FreeCount} free segments); the data moved so far stays moved, and a later run goes on from there";
                }
            }
        }
    }

    /// <summary>
    /// One step from block <paramref name="from"/>: plans up to <see cref="DefragStepBlocks"/>
    /// from the windows that need it, copies, commits (the commit redirects the maps). Returns
    /// where the next step starts. Caller holds the maintenance and structure locks.
    /// </summary>
    private async Task<long> DefragStepAsync(VolumeState v, long from, List<(long Phys, int Count)> plan, List<(long Old, int Count, long New)> copies, AlignedBuffer buffer, DefragReport report)
    {
        if (v.Deleted)
        {
            report.StoppedBecause = "the volume was deleted";
            return from;
        }
        plan.Clear();
        int planned = 0, scanned = 0, chosen = 0;
        long next = from, first = -1, last = -1;
        var end = EndBlock(v);
        while (scanned < DefragScanWindows && planned + DefragWindowBlocks <= DefragStepBlocks)
        {
            long window;
            lock (v.Lock)
            {
                window = v.Map.NextPopulatedWindow(next >> ExtentMap.WindowShift) << ExtentMap.WindowShift;
            }
            if (window >= end)
            {
                next = end;
                break;
            }
            var blocks = PlanWindow(v, window, plan);
            if (blocks > 0)
            {
                first = first < 0 ? window : first;
                last = window + DefragWindowBlocks;
                chosen++;
            }
            planned += blocks;
            scanned++;
            next = window + DefragWindowBlocks;
        }
        if (plan.Count > 0 && Overlaps(plan))
        {
            // Two pieces on the same device blocks (not made by any write path): the redirect
            // needs disjoint copies, so these windows stay as they are.
            Report(PoolLogLevel.Warning, $"defragment: volume {v.Name} maps a device block twice in blocks {from}-{next - 1}; left as is");
            plan.Clear();
        }
        if (plan.Count == 0)
        {
            report.WindowsScanned += scanned;
            return next;
        }
        var need = planned + planned / 16;
        if (DefragRoom() < need)
        {
            report.WaitForSpace = true;
            report.NeedBlocks = need;
            return from;
        }
        copies.Clear();
        Exception? failure = null;
        try
        {
            await CopyPlanAsync(plan, copies, buffer).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            // Whatever failed, the copies that landed get their commit below.
            failure = e;
        }
        if (copies.Count > 0)
        {
            await CommitMovesAsync(copies, first, last, report).ConfigureAwait(false);
        }
        if (failure is BlockVolumeException { Error: BlockError.NoSpace } && copies.Count < plan.Count)
        {
            // Client writes took the room meanwhile: this step again after the cleaner's turn
            // (the windows it moved have few runs now and are passed over).
            report.WaitForSpace = true;
            report.NeedBlocks = need;
            return from;
        }
        report.WindowsScanned += scanned;
        report.WindowsMoved += chosen;
        if (failure != null)
        {
            report.StoppedBecause = $"copying stopped: {failure.Message}";
        }
        return next;
    }

    /// <summary>
    /// Logs the step's commit; applying it (on the log's writer, in log order) redirects every
    /// map's entries in [first, last) that lie in a copy. A commit that fails leaves the copies
    /// unused, and <see cref="ForgetCopiesAsync"/> keeps replay from giving them to a later commit.
    /// </summary>
    private async Task CommitMovesAsync(List<(long Old, int Count, long New)> copies, long first, long last, DefragReport report)
    {
        var moved = new LiveRanges(Layout);
        var segments = new HashSet<int>();
        long blocks = 0;
        foreach (var (old, count, fresh) in copies)
        {
            var seg = Layout.SegmentOf(old);
            if (segments.Add(seg))
            {
                moved.Track(seg);
            }
            moved.AddMoved(old, count, fresh);
            blocks += count;
        }
        moved.SortMoved();
        Exception? redirectFailure = null;
        try
        {
            // Entries partly outside a copy (a snapshot sharing a larger range) keep the old
            // blocks, which stay until no map points at them: nothing is freed here.
            await LogMetadataAsync(RecordKind.MoveCommit, null, 0, Redirector.EncodeMoves(first, last, segments), 0, _ =>
            {
                var redirect = System.Diagnostics.Stopwatch.StartNew();
                try
                {
                    Redirector.Apply(_catalog.All(), moved, Layout, _walk, (first, last), Segments);
                }
                catch (Exception e)
                {
                    // Not on the log's writer's way: the step fails below, and its checkpoint
                    // makes replay take the maps as they are instead of redoing the redirect.
                    redirectFailure = e;
                }
                report.MaxRedirectMs = Math.Max(report.MaxRedirectMs, redirect.Elapsed.TotalMilliseconds);
                report.RedirectMs += redirect.Elapsed.TotalMilliseconds;
            }).ConfigureAwait(false);
            if (redirectFailure != null)
            {
                throw new InvalidOperationException($"redirecting the maps failed: {redirectFailure.Message}", redirectFailure);
            }
            report.BlocksMoved += blocks;
        }
        catch (Exception e) when (e is not ObjectDisposedException)
        {
            Report(PoolLogLevel.Error, $"defragment: the commit of {blocks} copied blocks failed ({e.Message}); they stay unused");
            await ForgetCopiesAsync(logged: redirectFailure != null).ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Adds the data pieces of the window at <paramref name="start"/> to the plan if they form enough runs; returns the blocks added.</summary>
    private int PlanWindow(VolumeState v, long start, List<(long Phys, int Count)> plan)
    {
        var mark = plan.Count;
        var maxCopy = Appender.MaxBatchBlocks;
        long runs = 0, lastEnd = -1, lastPhysEnd = -1;
        var blocks = 0;
        lock (v.Lock)
        {
            v.Map.Visit(start, start + DefragWindowBlocks, -1, (in ExtentMap.MapPieceInfo p) =>
            {
                if (p.Kind != ExtentKind.Data)
                {
                    return;
                }
                var contiguous = p.Block == lastEnd && p.Phys == lastPhysEnd;
                if (!contiguous)
                {
                    runs++;
                }
                if (p.Count > maxCopy)
                {
                    // Longer than one copy can be (a map entry is never split over two copies):
                    // a long run already, it stays where it is.
                    lastEnd = lastPhysEnd = -1;
                    return;
                }
                // Pieces that continue each other in the same segment move as one copy.
                if (contiguous && Layout.SegmentOf(p.Phys) == Layout.SegmentOf(lastPhysEnd - 1) && plan.Count > mark && plan[^1].Count + p.Count <= maxCopy)
                {
                    var (phys, count) = plan[^1];
                    plan[^1] = (phys, count + p.Count);
                }
                else
                {
                    plan.Add((p.Phys, p.Count));
                }
                blocks += p.Count;
                lastEnd = p.Block + p.Count;
                lastPhysEnd = p.Phys + p.Count;
            });
        }
        if (runs < DefragMinRuns)
        {
            plan.RemoveRange(mark, plan.Count - mark);
            return 0;
        }
        return blocks;
    }

    /// <summary>The volume's end in pool blocks (its size may change between steps).</summary>
    private static long EndBlock(VolumeState v) => Math.Min(v.Map.CapacityBlocks, (Volatile.Read(ref v.Size) + PoolLayout.BlockSize - 1) >> PoolLayout.BlockShift);

    private static bool Overlaps(List<(long Phys, int Count)> plan)
    {
        var sorted = plan.ToArray();
        Array.Sort(sorted, (a, b) => a.Phys.CompareTo(b.Phys));
        for (var i = 1; i < sorted.Length; i++)
        {
            if (sorted[i].Phys < sorted[i - 1].Phys + sorted[i - 1].Count)
            {
                return true;
            }
        }
        return false;
    }

    /// <summary>
    /// Reads the plan's pieces into <paramref name="buffer"/> back to back (up to
    /// <see cref="DefragReadsInFlight"/> at once) and appends them in order as relocation records;
    /// <paramref name="copies"/> gets each copy that landed. Throws on the first failed read or append.
    /// </summary>
    private async Task CopyPlanAsync(List<(long Phys, int Count)> plan, List<(long Old, int Count, long New)> copies, AlignedBuffer buffer)
    {
        var reads = new ValueTask[DefragReadsInFlight];
        var offsets = new int[plan.Count + 1];
        for (var i = 0; i < plan.Count; i++)
        {
            offsets[i + 1] = offsets[i] + (plan[i].Count << PoolLayout.BlockShift);
        }
        Exception? readFailure = null;
        for (var i = 0; i < plan.Count; i++)
        {
            if (i >= DefragReadsInFlight)
            {
                readFailure ??= await Settle(reads[i % DefragReadsInFlight]).ConfigureAwait(false);
            }
            if (readFailure == null)
            {
                reads[i % DefragReadsInFlight] = ReadDataAsync(plan[i].Phys, buffer.Memory[offsets[i]..offsets[i + 1]]);
            }
            else
            {
                reads[i % DefragReadsInFlight] = default;
            }
        }
        for (var i = Math.Max(0, plan.Count - DefragReadsInFlight); i < plan.Count; i++)
        {
            readFailure ??= await Settle(reads[i % DefragReadsInFlight]).ConfigureAwait(false);
        }
        if (readFailure != null)
        {
            throw readFailure;
        }
        var requests = new AppendRequest[plan.Count];
        var pending = new ValueTask[plan.Count];
        for (var i = 0; i < plan.Count; i++)
        {
            var r = requests[i] = RentCopy(plan[i].Phys, plan[i].Count, buffer.Memory[offsets[i]..offsets[i + 1]], "defragment");
            // Client writes' floor (the cleaner's reserve stays whole), and no waiting for space
            // while this holds the locks the cleaner needs: a copy that finds none fails.
            r.UseReserve = false;
            r.NoPark = true;
            r.DrainAtBatchEnd = true;
        }
        // Queued all at once, and the appender woken when all are there: taking them as they
        // came, it would write them in small batches, and each batch's header breaks the run.
        using (Async.CompletionBatch.Begin())
        {
            for (var i = 0; i < plan.Count; i++)
            {
                pending[i] = Appender.SubmitAsync(requests[i]);
            }
        }
        Exception? failure = null;
        for (var i = 0; i < plan.Count; i++)
        {
            try
            {
                await pending[i].ConfigureAwait(false);
                copies.Add((plan[i].Phys, plan[i].Count, requests[i].ResultPhys));
            }
            catch (Exception e)
            {
                failure ??= e;
            }
            finally
            {
                Appender.Return(requests[i]);
            }
        }
        if (failure != null)
        {
            throw failure;
        }

        static async ValueTask<Exception?> Settle(ValueTask read)
        {
            try
            {
                await read.ConfigureAwait(false);
                return null;
            }
            catch (Exception e)
            {
                return e;
            }
        }
    }

    /// <summary>
    /// After a failed commit. One that was never logged: a commit that moves nothing (what
    /// opening logs after a crash) makes replay drop the step's relocation records. One logged
    /// whose redirect failed part way: only a checkpoint (taking the maps as they are, its replay
    /// start past the commit) keeps replay from redoing the whole redirect. Were the checkpoint
    /// to fail too, a crash would replay what the live pool did not do: said loudly.
    /// </summary>
    private async Task ForgetCopiesAsync(bool logged)
    {
        if (!logged)
        {
            try
            {
                await LogMetadataAsync(RecordKind.CleanCommit, null, 0, [], 0, _ => { }).ConfigureAwait(false);
                return;
            }
            catch (Exception e)
            {
                Report(PoolLogLevel.Warning, $"defragment: could not log that the copies are unused ({e.Message}); writing a checkpoint instead");
            }
        }
        try
        {
            await WriteCheckpointLockedAsync(clean: false).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            Report(PoolLogLevel.Error, $"defragment: no checkpoint ({e.Message}): until one is written, a crash may replay the step's copies differently from what the pool did");
        }
    }

    /// <summary>
    /// Blocks the copies may take: what free segments hold above the reserve client writes need
    /// and above the point where client writes go into recycled holes (the copies must not push
    /// the pool there).
    /// </summary>
    private long DefragRoom() => (long)(Segments.FreeCount - DefragFloor()) * Layout.DataBlocksPerSegment;

    /// <summary>Free segments the copies leave: client writes' reserve, and above where client writes go into recycled holes.</summary>
    private int DefragFloor() => Math.Max(Appender.DataReserve + 2, Appender.RecycleBelow + 1);

    /// <summary>Runs cleaning passes until <paramref name="blocks"/> fit (the space the steps before freed is dead now); false if they do not.</summary>
    private async Task<bool> WaitForDefragSpaceAsync(long blocks, CancellationToken ct)
    {
        for (var pass = 0; pass < 4 && DefragRoom() < blocks; pass++)
        {
            var want = DefragFloor() + (int)(blocks / Layout.DataBlocksPerSegment) + 2;
            if (await CleanPassAsync(want, ct).ConfigureAwait(false) == 0)
            {
                break;
            }
        }
        return DefragRoom() >= blocks;
    }
}

/// <summary>What <see cref="Pool.DefragmentAsync"/> did.</summary>
public sealed class DefragReport
{
    /// <summary>Windows of <see cref="Pool.DefragWindowBlocks"/> looked at, and those rewritten.</summary>
    public long WindowsScanned { get; set; }
    public long WindowsMoved { get; set; }
    public long BlocksMoved { get; set; }

    /// <summary>Runs of blocks the volume's data forms on the device (see <see cref="VolumeUsage.DataRuns"/>).</summary>
    public long RunsBefore { get; set; }
    public long RunsAfter { get; set; }

    /// <summary>Why it ended before the volume's end, or null.</summary>
    public string? StoppedBecause { get; set; }

    /// <summary>It stopped because the pool lacked the free space for the next step.</summary>
    public bool ShortOfSpace { get; set; }

    internal bool WaitForSpace { get; set; }
    internal long NeedBlocks { get; set; }

    /// <summary>Time spent pointing the maps at the copies (each volume's lock held for its walk), in all and at most in one step.</summary>
    public double RedirectMs { get; set; }
    public double MaxRedirectMs { get; set; }
}
