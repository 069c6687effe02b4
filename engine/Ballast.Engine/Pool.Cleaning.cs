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
            if (Appender.RecycleBelow > 0)
            {
                if (!ShortOfSegments())
                {
                    // Recycling: a pass only finds more holes, when the appender runs low.
                    if (pass == 0 && Appender.HolesRemaining < Appender.HolesLowMark)
                    {
                        await CleanPassCoreAsync(want, recycleOnly: true, ct).ConfigureAwait(false);
                    }
                    break;
                }
                // Free segments go only to batch headers and metadata now: a few suffice.
                want = Math.Min(want, Appender.DataReserve + 3);
            }
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
    public Task<int> CleanPassAsync(int wantFree, CancellationToken ct = default) => CleanPassCoreAsync(wantFree, recycleOnly: false, ct);

    /// <summary>A pass; with <paramref name="recycleOnly"/> it copies nothing and only hands the appender new holes.</summary>
    private async Task<int> CleanPassCoreAsync(int wantFree, bool recycleOnly, CancellationToken ct)
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
            var freed = await CleanUnderStructureLockAsync(wantFree, recycleOnly, ct).ConfigureAwait(false);
            if (freed == 0 && !recycleOnly && (SegmentsInReplayChain() > 2 || Appender.RecycleBelow > 0))
            {
                // What is worth cleaning is still part of the log that replay reads, or was
                // recycled by records replay would read: a checkpoint moves the replay start past
                // it, then try again (a pass that needed space and freed nothing also took back
                // the appender's holes).
                await WriteCheckpointLockedAsync(clean: false).ConfigureAwait(false);
                freed = await CleanUnderStructureLockAsync(wantFree, recycleOnly, ct).ConfigureAwait(false);
            }
            return freed;
        }
        finally
        {
            _maintenance.Release();
        }
    }

    private async Task<int> CleanUnderStructureLockAsync(int wantFree, bool recycleOnly, CancellationToken ct)
    {
        await _structure.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            return await CleanLockedAsync(wantFree, recycleOnly, ct).ConfigureAwait(false);
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
    private async Task<int> CleanLockedAsync(int wantFree, bool recycleOnly, CancellationToken ct)
    {
        var sw = Stopwatch.StartNew();
        var recycling = Appender.RecycleBelow > 0;
        if (recycling)
        {
            // The appender keeps writing into its holes while this pass marks, and the mark may
            // miss those writes: it remembers what it takes from here on and leaves those blocks
            // out of the next list, and the segments of its list are not victims of this pass
            // (unless it has used them up).
            var left = 0L;
            await Appender.RunAtBoundaryAsync(() =>
            {
                Appender.BeginHoleMark();
                left = Appender.HolesRemaining;
            }).ConfigureAwait(false);
            if (left == 0)
            {
                _holeSegmentsInUse.Clear();
            }
        }
        var live = Mark();
        var liveBlocks = live.Merge();
        _cleanerStats.MarkMs += sw.Elapsed.TotalMilliseconds;
        var urgent = ShortOfSegments();
        var order = RankVictims(liveBlocks, urgent);
        var freedTotal = 0;
        var next = 0;
        var tried = false;
        // While recycling, client data needs no free segments: background passes copy only
        // when free segments run short (batch headers and metadata still take them), or when
        // copying is cheap: the best victims are mostly dead, and sequential copies cost less
        // than scattered writes into holes.
        var cheap = recycling && VictimLiveFraction(order) < _options.RecycleAboveLive;
        var copy = !recycleOnly || cheap;
        while (copy && next < order.Count && next < MaxVictimsPerPass && (Segments.FreeCount < wantFree || Appender.ParkedCount > 0))
        {
            tried = true;
            var group = NextGroup(order, ref next, out var copied);
            if (group.Count == 0)
            {
                break;
            }
            _passVictims.UnionWith(group);
            var freeBefore = Segments.FreeCount;
            var got = await CleanGroupAsync(live.Subset(group), group, urgent, ct).ConfigureAwait(false);
            freedTotal += got;
            Report(PoolLogLevel.Debug, $"cleaner: group of {group.Count} victim(s), {copied} live blocks copied, {got} freed; free {freeBefore} -> {Segments.FreeCount}");
            if (got == 0)
            {
                break;
            }
        }
        if (recycling && tried && freedTotal == 0 && _holeSegmentsInUse.Count > 0)
        {
            // Space was needed and nothing outside the appender's holes could be cleaned: it
            // gives them up, so the next pass may take their segments. (A cheap pass that found
            // enough free segments needed nothing and keeps them.)
            await Appender.RunAtBoundaryAsync(Appender.ClearHoles).ConfigureAwait(false);
            _holeSegmentsInUse.Clear();
            Report(PoolLogLevel.Debug, "cleaner: the appender's holes taken back (nothing else could be cleaned)");
        }
        else if (recycling && !cheap)
        {
            await PublishHolesAsync(live, liveBlocks).ConfigureAwait(false);
        }
        _passVictims.Clear();
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
            // Punched before it is released: once free, the appender may write into it at once.
            var returned = _options.ReturnFreedSpace && TryDiscard(v);
            Segments.Release(v, spaceReturned: returned);
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

    /// <summary>Free segments are at the data reserve's edge, or writes already wait for space.</summary>
    private bool ShortOfSegments() => Segments.FreeCount <= Appender.DataReserve + 1 || Appender.ParkedCount > 0;

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
        var replayFrom = _superblock.Current.ReplayStart.Seq;
        var scored = _scored;
        scored.Clear();
        foreach (var (seg, liveCount) in liveBlocks)
        {
            var e = Segments[seg];
            e.LiveBlocks = liveCount;
            if (e.RecycledSeq >= replayFrom || _holeSegmentsInUse.Contains(seg))
            {
                // Replay may still apply writes into its holes, reading them there: it stays
                // until a checkpoint moves the replay start past them.
                continue;
            }
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

    /// <summary>Average live fraction of the first victims in line (1 when there are none).</summary>
    private double VictimLiveFraction(List<(int Segment, int Live)> order)
    {
        var n = Math.Min(8, order.Count);
        if (n == 0)
        {
            return 1;
        }
        long live = 0;
        for (var i = 0; i < n; i++)
        {
            live += order[i].Live;
        }
        return (double)live / ((long)n * Layout.DataBlocksPerSegment);
    }

    private readonly HashSet<int> _passVictims = [];
    private List<(long Phys, int Count)> _holesSpare = [];
    private readonly List<(int Segment, int Live)> _holeSegments = [];
    // Segments of the holes last handed over: the appender may still be writing into them.
    private HashSet<int> _holeSegmentsInUse = [];
    private HashSet<int> _holeSegmentsSpare = [];

    /// <summary>
    /// Holes handed to the appender per pass, at most (32 MiB of 4 KiB writes). Their segments
    /// are not victims while the appender uses them, so the list leaves most of the pool to the
    /// cleaner.
    /// </summary>
    internal const int MaxHoleBlocks = 8192;

    /// <summary>
    /// Hands the appender the dead blocks this pass's mark found in sealed segments it did not
    /// clean, emptiest segments first. A block dead at the mark stays dead (new data goes to the
    /// log head until the holes are handed over), but before it may be overwritten, the records
    /// that killed it must be durable (or a crash could bring back a mapping into it) and no
    /// reader may still hold an older mapping into it: a sync and a reader drain come first.
    /// Only blocks that held payload count (their CRC is not zero): batch headers, seals and
    /// summaries stay as they are.
    /// </summary>
    private async Task PublishHolesAsync(LiveRanges live, Dictionary<int, int> liveBlocks)
    {
        var segs = _holeSegments;
        segs.Clear();
        foreach (var (seg, liveCount) in liveBlocks)
        {
            var e = Segments[seg];
            if (!_passVictims.Contains(seg) && e.State == SegmentState.Log && e.Sealed && liveCount < Layout.DataBlocksPerSegment)
            {
                segs.Add((seg, liveCount));
            }
        }
        segs.Sort((a, b) => a.Live.CompareTo(b.Live));
        var runs = _holesSpare;
        runs.Clear();
        var total = 0;
        var inUse = _holeSegmentsSpare;
        inUse.Clear();
        var dataEnd = Layout.BatchLimit >> PoolLayout.BlockShift;
        foreach (var (seg, _) in segs)
        {
            if (total >= MaxHoleBlocks)
            {
                break;
            }
            var crcs = Segments[seg].Crcs;
            if (crcs == null)
            {
                continue;
            }
            var comps = live.ComponentsOf(seg);
            var c = 0;
            var runStart = -1;
            for (var b = 1; b < dataEnd && total < MaxHoleBlocks; b++)
            {
                var phys = Layout.BlockAddress(seg, b << PoolLayout.BlockShift);
                while (c < comps.Count && comps[c].Phys + comps[c].Count <= phys)
                {
                    c++;
                }
                var hole = crcs[b] != 0 && !(c < comps.Count && comps[c].Phys <= phys);
                if (hole)
                {
                    runStart = runStart < 0 ? b : runStart;
                    total++;
                }
                if (runStart >= 0 && (!hole || b == dataEnd - 1 || total >= MaxHoleBlocks))
                {
                    var end = hole ? b + 1 : b;
                    runs.Add((Layout.BlockAddress(seg, runStart << PoolLayout.BlockShift), end - runStart));
                    inUse.Add(seg);
                    runStart = -1;
                }
            }
        }
        if (runs.Count == 0)
        {
            return;
        }
        await SyncLogAsync().ConfigureAwait(false);
        await Epoch.DrainAsync(CancellationToken.None).ConfigureAwait(false);
        List<(long Phys, int Count)>? old = null;
        await Appender.RunAtBoundaryAsync(() => old = Appender.SwapHoles(runs)).ConfigureAwait(false);
        // The next list is asked for while a quarter of this one is left, so writes rarely find none.
        Appender.HolesLowMark = Math.Max(2048, total / 4);
        _holesSpare = old ?? [];
        (_holeSegmentsInUse, _holeSegmentsSpare) = (inUse, _holeSegmentsInUse);
        _cleanerStats.HolesHandedOver += total;
        // Writes waiting for space may take holes now.
        Appender.SpaceFreed();
        Report(PoolLogLevel.Debug, $"cleaner: {total} dead blocks in {runs.Count} runs handed over for reuse");
    }

    /// <summary>Makes everything written so far durable (one log sync).</summary>
    private async Task SyncLogAsync()
    {
        var r = Appender.Rent();
        r.Op = AppendOp.Flush;
        try
        {
            await Appender.SubmitAsync(r).ConfigureAwait(false);
        }
        finally
        {
            Appender.Return(r);
        }
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
                    var r = RentCopy(c.Phys, c.Count, slice, "cleaner");
                    r.UseReserve = true;
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
    /// A relocation record copying <paramref name="count"/> blocks from <paramref name="phys"/>,
    /// whose bytes are in <paramref name="data"/>. Each block keeps its original CRC, so one that
    /// fails it (counted and logged) is moved as is and stays an I/O error for readers.
    /// </summary>
    private AppendRequest RentCopy(long phys, int count, Memory<byte> data, string who)
    {
        var r = Appender.Rent();
        r.Desc.Kind = RecordKind.Data;
        r.Desc.Flags = RecordFlags.Relocated;
        r.Desc.BlockCount = count;
        r.Desc.Aux = phys;
        r.Payload = data;
        for (var k = 0; k < count; k++)
        {
            Segments.TryGetCrc(phys + k, out r.Crcs[k]);
            if (Crc32C.Compute(data.Span.Slice(k << PoolLayout.BlockShift, PoolLayout.BlockSize)) != r.Crcs[k])
            {
                _cleanerStats.CorruptBlocksCarried++;
                Report(PoolLogLevel.Error, $"{who}: pool block {phys + k} fails its checksum; moved as is");
            }
        }
        return r;
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
