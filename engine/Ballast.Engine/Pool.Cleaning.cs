using System.Diagnostics;
using Ballast.Engine.Buffers;
using Ballast.Engine.Cleaning;
using Ballast.Engine.Log;
using Ballast.Engine.Maps;
using Ballast.Engine.Storage;
using Ballast.Engine.Volumes;

namespace Ballast.Engine;

/// <summary>
/// The cleaner. A pass marks which blocks of sealed segments any map still references, picks
/// victims by LFS cost-benefit ((1-u)·age/(1+u)), copies their live data forward through the
/// appender as relocation records, redirects every referencing map entry, and leaves the
/// victims to be freed by the checkpoint that follows (until it is durable, recovery still
/// needs them). Copies honour a bandwidth limit unless writes are already short of space.
/// </summary>
public sealed partial class Pool
{
    private const int MaxVictimsPerPass = 16;

    public CleanerStats CleanerStats => _cleanerStats;

    /// <summary>Cleans until the free-space target is met or nothing is worth cleaning. Returns segments freed.</summary>
    public async Task<int> CleanAsync(CancellationToken ct = default)
    {
        var freed = 0;
        for (var pass = 0; pass < 32; pass++)
        {
            NeedsCleaning(out var want);
            if (Segments.FreeCount >= want && Appender.ParkedCount == 0)
            {
                break;
            }
            want = Math.Max(want, Segments.FreeCount + 1);
            var n = await CleanPassAsync(want, ct).ConfigureAwait(false);
            if (n == 0)
            {
                break;
            }
            freed += n;
        }
        return freed;
    }

    /// <summary>One pass aiming at <paramref name="wantFree"/> free segments; returns how many it freed.</summary>
    public async Task<int> CleanPassAsync(int wantFree, CancellationToken ct = default)
    {
        await _maintenance.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            if (SegmentsInReplayChain() > Math.Max(4, (Segments.Count - Segments.FreeCount) / 8))
            {
                // Only segments before the replay start may be cleaned; when the chain replay
                // walks holds a good share of the log, move its start first.
                await WriteCheckpointLockedAsync(clean: false).ConfigureAwait(false);
            }
            var freed = await CleanUnderStructureLockAsync(wantFree, ct).ConfigureAwait(false);
            if (freed == 0 && SegmentsInReplayChain() > 2)
            {
                // What is worth cleaning is still part of the log that replay reads: a checkpoint
                // moves the replay start past it, then try again.
                await WriteCheckpointLockedAsync(clean: false).ConfigureAwait(false);
                freed = await CleanUnderStructureLockAsync(wantFree, ct).ConfigureAwait(false);
            }
            return freed;
        }
        finally
        {
            _maintenance.Release();
        }
    }

    private async Task<int> CleanUnderStructureLockAsync(int wantFree, CancellationToken ct)
    {
        await _structure.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            return await CleanLockedAsync(wantFree, ct).ConfigureAwait(false);
        }
        finally
        {
            _structure.Release();
        }
    }

    // Reused by every pass (passes run one at a time, under the structure lock).
    private LiveRanges? _mark;
    private readonly MapWalkScratch _walk = new();
    private readonly List<(int Segment, int Index, AppendRequest Request)> _copyGroup = [];
    private ValueTask[] _pending = [];
    private AlignedBuffer? _copyBuffer;
    private readonly List<(int Segment, double Score, int Live)> _scored = [];
    private readonly List<(int Segment, int Live)> _victimOrder = [];
    private static readonly Comparison<(int Segment, double Score, int Live)> ByScoreDescending = (a, b) => b.Score.CompareTo(a.Score);

    /// <summary>
    /// One pass: mark once, then clean victims in small groups (copy, redirect, commit, free), so
    /// the space a group frees is what the next group copies into. At high utilisation a victim
    /// frees little, and copying many before freeing any would need free space the pool lacks.
    /// </summary>
    private async Task<int> CleanLockedAsync(int wantFree, CancellationToken ct)
    {
        var sw = Stopwatch.StartNew();
        var live = Mark();
        var liveBlocks = live.Merge();
        _cleanerStats.MarkMs += sw.Elapsed.TotalMilliseconds;
        var urgent = Segments.FreeCount <= Appender.DataReserve + 1 || Appender.ParkedCount > 0;
        var order = RankVictims(liveBlocks, urgent);
        var freedTotal = 0;
        var next = 0;
        while (next < order.Count && next < MaxVictimsPerPass && (Segments.FreeCount < wantFree || Appender.ParkedCount > 0))
        {
            var group = NextGroup(order, ref next, out var copy);
            if (group.Count == 0)
            {
                break;
            }
            var freeBefore = Segments.FreeCount;
            var got = await CleanGroupAsync(live.Subset(group), group, urgent, ct).ConfigureAwait(false);
            freedTotal += got;
            Report(PoolLogLevel.Debug, $"cleaner: group of {group.Count} victim(s), {copy} live blocks copied, {got} freed; free {freeBefore} -> {Segments.FreeCount}");
            if (got == 0)
            {
                break;
            }
        }
        _cleanerStats.Passes++;
        _cleanerStats.SegmentsFreed += freedTotal;
        _cleanerStats.LastPassMs = sw.Elapsed.TotalMilliseconds;
        Report(PoolLogLevel.Debug, $"cleaner: {freedTotal} segment(s) freed, {sw.ElapsedMilliseconds} ms");
        return freedTotal;
    }

    /// <summary>
    /// The next victims to clean together: as many as the space the cleaner can count on holds.
    /// Client writes may take free segments down to DataReserve while a group is copied, so the
    /// cleaner counts only on what lies below that line and above its own floor (MinReserve + 1).
    /// Copies are packed into segment ends (see the appender), so 95% of those segments is a
    /// safe budget: batch headers take well under 1%.
    /// </summary>
    private HashSet<int> NextGroup(List<(int Segment, int Live)> order, ref int next, out long copy)
    {
        var usable = Math.Min(Segments.FreeCount, Appender.DataReserve) - Appender.MinReserve - 1;
        var budget = (long)Math.Max(0, usable) * Layout.DataBlocksPerSegment * 95 / 100;
        var group = new HashSet<int>();
        copy = 0;
        while (next < order.Count && group.Count < 8 && copy + order[next].Live <= budget)
        {
            group.Add(order[next].Segment);
            copy += order[next].Live;
            next++;
        }
        return group;
    }

    /// <summary>
    /// Copies the victims' live data forward, redirects the maps, logs the commit and frees the
    /// victims. If a copy fails part way (the device or the pool is full), the victims whose data
    /// was copied completely are still committed and freed: the pass always keeps its progress.
    /// </summary>
    private async Task<int> CleanGroupAsync(LiveRanges live, HashSet<int> victims, bool urgent, CancellationToken ct)
    {
        var copied = await CopyForwardAsync(live, victims, urgent, ct).ConfigureAwait(false);
        var redirect = Stopwatch.StartNew();
        var stillReferenced = Redirector.Apply(_catalog.All(), live.Subset(copied), Layout, _walk);
        var redirectMs = redirect.Elapsed.TotalMilliseconds;
        _cleanerStats.RedirectMs += redirectMs;
        _cleanerStats.MaxRedirectMs = Math.Max(_cleanerStats.MaxRedirectMs, redirectMs);
        var freed = new List<int>();
        foreach (var v in copied)
        {
            if (stillReferenced.Contains(v))
            {
                // Defensive: never free a segment a map still points into.
                Report(PoolLogLevel.Error, $"cleaner: segment {v} is still referenced after redirection; keeping it");
                continue;
            }
            Segments[v].State = SegmentState.PendingFree;
            freed.Add(v);
        }
        // Logged even when nothing was freed: it tells replay to forget the relocations before it.
        await LogMetadataAsync(RecordKind.CleanCommit, null, 0, Redirector.EncodeVictims(freed), 0, _ => { }).ConfigureAwait(false);
        if (freed.Count == 0)
        {
            return 0;
        }
        // Once the commit is durable, recovery redoes the redirection: the victims may be reused
        // as soon as no reader still holds a mapping into them.
        await Epoch.DrainAsync(CancellationToken.None).ConfigureAwait(false);
        foreach (var v in freed)
        {
            Segments.Release(v);
            if (_options.ReturnFreedSpace)
            {
                TryDiscard(v);
            }
        }
        Appender.SpaceFreed();
        return freed.Count;
    }

    /// <summary>
    /// Marks live ranges in sealed log segments. Each map is frozen copy-on-write for the walk
    /// (as for a checkpoint), so the walk holds no lock while writes go on.
    /// </summary>
    private LiveRanges Mark()
    {
        // One mark at a time (the structure lock): its collections are reused from pass to pass.
        var live = _mark ??= new LiveRanges(Layout);
        live.Reset();
        var replayFrom = _superblock.Current.ReplayStart.Seq;
        for (var i = 0; i < Segments.Count; i++)
        {
            // Only sealed segments the appender never writes again, and only those before the
            // checkpoint's replay start: replay still walks the ones after it.
            var e = Segments[i];
            if (e.State == SegmentState.Log && e.Sealed && e.Seq < replayFrom)
            {
                live.Track(i);
            }
        }
        var frozen = new List<(VolumeState Volume, MapNode? Root)>();
        foreach (var v in _catalog.All())
        {
            lock (v.Lock)
            {
                frozen.Add((v, v.Map.BeginCheckpoint(out _)));
            }
        }
        try
        {
            var leaves = _walk.Leaves;
            foreach (var (_, root) in frozen)
            {
                ExtentMap.CollectLeaves(root, _walk.Seen, leaves, _walk.Stack);
            }
            foreach (var leaf in leaves)
            {
                for (var i = 0; i < leaf.Count; i++)
                {
                    ref readonly var e = ref leaf.Items[i];
                    if (e.Kind == ExtentKind.Data)
                    {
                        live.Add(e.Phys, e.Count);
                    }
                }
            }
        }
        finally
        {
            // The leaves may be recycled once the maps end the freeze: drop them first.
            _walk.Clear();
            foreach (var (v, _) in frozen)
            {
                lock (v.Lock)
                {
                    v.Map.EndCheckpoint();
                }
            }
        }
        return live;
    }

    private int SegmentsInReplayChain()
    {
        var replayFrom = _superblock.Current.ReplayStart.Seq;
        var n = 0;
        for (var i = 0; i < Segments.Count; i++)
        {
            if (Segments.StateOf(i) == SegmentState.Log && Segments[i].Seq >= replayFrom)
            {
                n++;
            }
        }
        return n;
    }

    /// <summary>
    /// Candidates best first by LFS cost-benefit, (1-u)·age/(1+u). Nearly full segments are
    /// skipped unless writes are waiting for space, when any that frees something will do.
    /// </summary>
    private List<(int Segment, int Live)> RankVictims(Dictionary<int, int> liveBlocks, bool urgent)
    {
        var capacity = Layout.DataBlocksPerSegment;
        var now = Environment.TickCount64;
        var limit = urgent ? 0.998 : 0.95;
        var scored = _scored;
        scored.Clear();
        foreach (var (seg, liveCount) in liveBlocks)
        {
            var e = Segments[seg];
            e.LiveBlocks = liveCount;
            var u = Math.Min(1.0, (double)liveCount / capacity);
            if (u >= limit)
            {
                continue;
            }
            var age = Math.Max(1, (now - e.LastWriteTicks) / 1000.0);
            scored.Add((seg, (1 - u) * age / (1 + u), liveCount));
        }
        scored.Sort(ByScoreDescending);
        var order = _victimOrder;
        order.Clear();
        foreach (var x in scored)
        {
            order.Add((x.Segment, x.Live));
        }
        return order;
    }

    /// <summary>
    /// Gaps up to this many blocks between live components are read along with them: one read
    /// of a few dead blocks costs less than another random read (a victim at 70% live holds
    /// hundreds of scattered components).
    /// </summary>
    internal const int MaxReadGapBlocks = 32;

    /// <summary>
    /// Copies every live component of the victims through the appender as relocation records.
    /// Nearby components are read together (<see cref="MaxReadGapBlocks"/>) and each record's
    /// payload is its slice of that read. Returns the victims whose components were all copied;
    /// stops at the first failed copy.
    /// </summary>
    private async Task<HashSet<int>> CopyForwardAsync(LiveRanges live, HashSet<int> victims, bool urgent, CancellationToken ct)
    {
        var bufferBytes = Appender.MaxBatchBlocks << PoolLayout.BlockShift;
        var buffer = _copyBuffer ??= new AlignedBuffer(bufferBytes);
        var group = _copyGroup;
        group.Clear();
        var fill = 0;
        long moved = 0;
        var sw = Stopwatch.StartNew();
        var failed = false;
        try
        {
            foreach (var seg in victims.Order())
            {
                var comps = live.ComponentsOf(seg);
                // The blocks [readStart, readEnd) were read into the buffer at readOffset.
                long readStart = 0, readEnd = 0;
                var readOffset = 0;
                for (var i = 0; i < comps.Count && !failed; i++)
                {
                    var c = comps[i];
                    var bytes = c.Count << PoolLayout.BlockShift;
                    if (bytes > bufferBytes)
                    {
                        // Ranges shared by snapshots can chain into a piece larger than one record:
                        // this victim stays until its references change.
                        Report(PoolLogLevel.Warning, $"cleaner: segment {seg} holds a shared piece of {c.Count} blocks, more than one copy can move; skipping it");
                        break;
                    }
                    if (c.Phys < readStart || c.Phys + c.Count > readEnd)
                    {
                        if (fill + bytes > bufferBytes)
                        {
                            failed = !await SubmitGroupAsync(group, live).ConfigureAwait(false);
                            fill = 0;
                            if (failed)
                            {
                                break;
                            }
                            if (!urgent)
                            {
                                await Throttle(moved, sw, ct).ConfigureAwait(false);
                            }
                        }
                        readStart = c.Phys;
                        readEnd = ReadSpanEnd(comps, i, (bufferBytes - fill) >> PoolLayout.BlockShift);
                        readOffset = fill;
                        try
                        {
                            Storage.Read(readStart << PoolLayout.BlockShift, buffer.Memory.Span.Slice(readOffset, (int)(readEnd - readStart) << PoolLayout.BlockShift));
                        }
                        catch (StorageException) when (readEnd > c.Phys + c.Count)
                        {
                            // The failing block may be a dead one between pieces: read this piece alone
                            // (a failure now is this piece's, as before reads were joined).
                            readEnd = c.Phys + c.Count;
                            Storage.Read(readStart << PoolLayout.BlockShift, buffer.Memory.Span.Slice(readOffset, bytes));
                        }
                        fill += (int)(readEnd - readStart) << PoolLayout.BlockShift;
                        _cleanerStats.Reads++;
                    }
                    var slice = buffer.Memory.Slice(readOffset + ((int)(c.Phys - readStart) << PoolLayout.BlockShift), bytes);
                    var r = Appender.Rent();
                    r.Desc.Kind = RecordKind.Data;
                    r.Desc.Flags = RecordFlags.Relocated;
                    r.Desc.BlockCount = c.Count;
                    r.Desc.Aux = c.Phys;
                    r.Payload = slice;
                    r.UseReserve = true;
                    for (var k = 0; k < c.Count; k++)
                    {
                        Segments.TryGetCrc(c.Phys + k, out r.Crcs[k]);
                        if (Crc32C.Compute(slice.Span.Slice(k << PoolLayout.BlockShift, PoolLayout.BlockSize)) != r.Crcs[k])
                        {
                            // Carried with its original CRC, so it stays an I/O error for readers.
                            _cleanerStats.CorruptBlocksCarried++;
                            Report(PoolLogLevel.Error, $"cleaner: pool block {c.Phys + k} fails its checksum; moved as is");
                        }
                    }
                    group.Add((seg, i, r));
                    moved += bytes;
                }
                if (failed)
                {
                    break;
                }
            }
            if (!failed)
            {
                await SubmitGroupAsync(group, live).ConfigureAwait(false);
            }
        }
        catch
        {
            // A read failed part way: the copies not yet submitted go back unused.
            foreach (var (_, _, r) in group)
            {
                Appender.Return(r);
            }
            group.Clear();
            throw;
        }
        _cleanerStats.BlocksMoved += moved >> PoolLayout.BlockShift;
        var copied = new HashSet<int>();
        foreach (var seg in victims)
        {
            var all = true;
            foreach (var c in live.ComponentsOf(seg))
            {
                all &= c.NewPhys >= 0;
            }
            if (all)
            {
                copied.Add(seg);
            }
        }
        return copied;
    }

    /// <summary>
    /// End (exclusive, in pool blocks) of one read starting at component <paramref name="first"/>:
    /// it takes the following components while the gap before each is at most
    /// <see cref="MaxReadGapBlocks"/> and the whole read fits in <paramref name="roomBlocks"/>.
    /// Components are sorted by address and do not overlap (see LiveRanges.Merge).
    /// </summary>
    internal static long ReadSpanEnd(List<LiveRanges.Component> comps, int first, int roomBlocks)
    {
        var start = comps[first].Phys;
        var end = start + comps[first].Count;
        for (var j = first + 1; j < comps.Count; j++)
        {
            var c = comps[j];
            if (c.Phys - end > MaxReadGapBlocks || c.Phys + c.Count - start > roomBlocks)
            {
                break;
            }
            end = c.Phys + c.Count;
        }
        return end;
    }

    /// <summary>Submits the copies together; false if any failed (logged).</summary>
    private async Task<bool> SubmitGroupAsync(List<(int Segment, int Index, AppendRequest Request)> group, LiveRanges live)
    {
        if (_pending.Length < group.Count)
        {
            _pending = new ValueTask[Math.Max(group.Count, _pending.Length * 2)];
        }
        var pending = _pending;
        for (var i = 0; i < group.Count; i++)
        {
            pending[i] = Appender.SubmitAsync(group[i].Request);
        }
        Exception? failure = null;
        for (var i = 0; i < group.Count; i++)
        {
            try
            {
                await pending[i].ConfigureAwait(false);
                var (seg, index, r) = group[i];
                var comps = live.ComponentsOf(seg);
                var c = comps[index];
                c.NewPhys = r.ResultPhys;
                comps[index] = c;
            }
            catch (Exception e)
            {
                failure ??= e;
            }
            finally
            {
                Appender.Return(group[i].Request);
            }
        }
        group.Clear();
        Array.Clear(pending, 0, pending.Length);
        if (failure != null)
        {
            Report(PoolLogLevel.Warning, $"cleaner: copying live data forward stopped: {failure.Message}");
        }
        return failure == null;
    }

    private async Task Throttle(long moved, Stopwatch sw, CancellationToken ct)
    {
        var rate = Math.Max(1 << 20, _options.CleanerBytesPerSecond);
        var due = TimeSpan.FromSeconds((double)moved / rate);
        if (due > sw.Elapsed)
        {
            await Task.Delay(due - sw.Elapsed, ct).ConfigureAwait(false);
        }
    }
}
