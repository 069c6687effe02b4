namespace Ballast.Engine.Log;

public enum SegmentState : byte
{
    Free = 0,
    /// <summary>Part of the log: being appended to, or sealed.</summary>
    Log = 1,
    /// <summary>Holds the current checkpoint.</summary>
    Checkpoint = 2,
    /// <summary>Emptied by the cleaner; becomes free once a checkpoint no longer needs it and no reader uses it.</summary>
    PendingFree = 3,
}

/// <summary>
/// State of every segment: what it is used for, its log sequence number, the CRC32C of every
/// block written to it (checked on every read, so a corrupt block is an I/O error, never wrong
/// data), and usage figures for the cleaner. 4 bytes of CRC per 4 KiB block: 0.1% of pool size in RAM.
/// </summary>
public sealed class SegmentTable : Maps.IDisplacedSink
{
    private readonly object _lock = new();
    private readonly Entry[] _entries;
    // CRC arrays of freed segments, for the next segments allocated: each lives as long as its
    // segment, so a fresh one per segment would die in gen 2. Up to a quarter of the segments'
    // worth is kept (the pool needed them when it was that full); the rest go to the collector.
    private readonly Stack<uint[]> _spareCrcs = new();
    private int MaxSpareCrcs => Math.Max(16, _entries.Length / 4);

    public SegmentTable(PoolLayout layout)
    {
        Layout = layout;
        _entries = new Entry[layout.SegmentCount];
        for (var i = 0; i < _entries.Length; i++)
        {
            _entries[i] = new Entry();
        }
        FreeCount = layout.SegmentCount;
    }

    public PoolLayout Layout { get; }
    public int Count => _entries.Length;
    public int FreeCount { get; private set; }

    /// <summary>Free segments claimed by the preparer (not in <see cref="FreeCount"/> until it is done).</summary>
    public int PreparingCount { get; private set; }

    public sealed class Entry
    {
        public SegmentState State;
        public ulong Seq;
        public uint[]? Crcs;
        /// <summary>Blocks of data written to the segment (its payload), as of now.</summary>
        public int WrittenBlocks;
        /// <summary>Blocks known to be overwritten or trimmed (an estimate; the cleaner's mark counts exactly).</summary>
        public int DisplacedBlocks;
        /// <summary>Live blocks found by the last mark, or -1.</summary>
        public int LiveBlocks = -1;
        /// <summary>A seal closed this log segment: it will never be appended to again, so the cleaner may take it.</summary>
        public bool Sealed;
        /// <summary>CRC32C of the summary written after the seal (sealed segments).</summary>
        public uint SummaryCrc;
        /// <summary>Offset the appender has written up to (log segments).</summary>
        public int WriteOffset;
        public long LastWriteTicks;
        /// <summary>
        /// Sealed, and data was since written into its dead blocks: its summary is stale, so a
        /// checkpoint carries its CRCs instead.
        /// </summary>
        public bool Recycled;
        /// <summary>Log sequence of the last batch that wrote into its dead blocks (0: none).</summary>
        public ulong RecycledSeq;
        /// <summary>
        /// All of its space is known to be written on the file (see <see cref="SegmentPreparer"/>):
        /// the log's writes there need no extent conversion. Kept across reuse.
        /// </summary>
        public bool Prepared;
        /// <summary>Free, but being zeroed: not handed out until that is done.</summary>
        public bool Preparing;
    }

    public Entry this[int segment] => _entries[segment];

    public SegmentState StateOf(int segment) => _entries[segment].State;

    /// <summary>Called after every allocation, outside the lock (wakes the preparer).</summary>
    public Action? Allocated { get; set; }

    /// <summary>
    /// Takes the lowest-numbered free segment that is prepared, else the lowest-numbered free one
    /// (keeps a sparse pool file compact), or -1.
    /// </summary>
    public int Allocate(SegmentState state, int reserve)
    {
        var taken = AllocateCore(state, reserve);
        if (taken >= 0)
        {
            Allocated?.Invoke();
        }
        return taken;
    }

    private int AllocateCore(SegmentState state, int reserve)
    {
        lock (_lock)
        {
            if (FreeCount <= reserve)
            {
                return -1;
            }
            var pick = -1;
            for (var i = 0; i < _entries.Length; i++)
            {
                var e = _entries[i];
                if (e.State == SegmentState.Free && !e.Preparing)
                {
                    if (e.Prepared)
                    {
                        pick = i;
                        break;
                    }
                    if (pick < 0)
                    {
                        pick = i;
                    }
                }
            }
            if (pick < 0)
            {
                return -1;
            }
            var taken = _entries[pick];
            taken.State = state;
            if (taken.Crcs == null)
            {
                taken.Crcs = TakeCrcs();
            }
            else
            {
                Array.Clear(taken.Crcs);
            }
            taken.WrittenBlocks = 0;
            taken.DisplacedBlocks = 0;
            taken.LiveBlocks = -1;
            taken.Sealed = false;
            taken.Recycled = false;
            taken.RecycledSeq = 0;
            taken.WriteOffset = Layout.FirstBatchOffset;
            taken.LastWriteTicks = Environment.TickCount64;
            FreeCount--;
            return pick;
        }
    }

    /// <summary>
    /// Claims the lowest-numbered free segment not known to be prepared, for the preparer to zero:
    /// only while fewer than <paramref name="window"/> free segments are prepared and more than
    /// <paramref name="keepFree"/> are free (the claim hides one from allocation). -1 if none.
    /// </summary>
    public int ClaimForPreparing(int window, int keepFree)
    {
        lock (_lock)
        {
            if (FreeCount <= keepFree)
            {
                return -1;
            }
            var prepared = 0;
            var pick = -1;
            for (var i = 0; i < _entries.Length; i++)
            {
                var e = _entries[i];
                if (e.State != SegmentState.Free || e.Preparing)
                {
                    continue;
                }
                if (e.Prepared)
                {
                    prepared++;
                }
                else if (pick < 0)
                {
                    pick = i;
                }
            }
            if (pick < 0 || prepared >= window)
            {
                return -1;
            }
            _entries[pick].Preparing = true;
            FreeCount--;
            PreparingCount++;
            return pick;
        }
    }

    /// <summary>Ends a claim: the segment is free again, and prepared if the zeroing succeeded.</summary>
    public void EndPreparing(int segment, bool prepared)
    {
        lock (_lock)
        {
            var e = _entries[segment];
            System.Diagnostics.Debug.Assert(e.State == SegmentState.Free && e.Preparing, "only a claimed free segment ends preparing");
            e.Preparing = false;
            e.Prepared = prepared;
            FreeCount++;
            PreparingCount--;
        }
    }

    /// <summary>A zeroed CRC array for a segment: a spare one cleared, or a new one.</summary>
    private uint[] TakeCrcs()
    {
        if (_spareCrcs.TryPop(out var c))
        {
            Array.Clear(c);
            return c;
        }
        return new uint[Layout.BlocksPerSegment];
    }

    /// <summary>Marks a segment used while loading a checkpoint or replaying.</summary>
    public void MarkUsed(int segment, SegmentState state, ulong seq)
    {
        lock (_lock)
        {
            var e = _entries[segment];
            if (e.State == SegmentState.Free)
            {
                FreeCount--;
            }
            e.State = state;
            e.Seq = seq;
            e.Crcs ??= TakeCrcs();
        }
    }

    /// <param name="spaceReturned">Its space was given back to the filesystem, so it is no longer prepared.</param>
    public void Release(int segment, bool spaceReturned = false)
    {
        lock (_lock)
        {
            var e = _entries[segment];
            if (spaceReturned)
            {
                e.Prepared = false;
            }
            if (e.State != SegmentState.Free)
            {
                FreeCount++;
            }
            e.State = SegmentState.Free;
            e.Sealed = false;
            e.Recycled = false;
            e.RecycledSeq = 0;
            e.Seq = 0;
            // A segment is released only once no reader can still resolve a block in it (the
            // cleaner drains the reader epoch first), so its CRC array has no reader left.
            if (e.Crcs != null && _spareCrcs.Count < MaxSpareCrcs)
            {
                _spareCrcs.Push(e.Crcs);
            }
            e.Crcs = null;
            e.WrittenBlocks = 0;
            e.DisplacedBlocks = 0;
            e.LiveBlocks = -1;
        }
    }

    /// <summary>CRC recorded for a physical block; false if the block is not in a used segment.</summary>
    public bool TryGetCrc(long physBlock, out uint crc)
    {
        crc = 0;
        if (!Layout.IsDataBlock(physBlock))
        {
            return false;
        }
        var e = _entries[Layout.SegmentOf(physBlock)];
        var crcs = e.Crcs;
        if (crcs == null || e.State == SegmentState.Free)
        {
            return false;
        }
        crc = crcs[Layout.BlockInSegment(physBlock)];
        return true;
    }

    public void SetCrcs(long firstPhys, ReadOnlySpan<uint> crcs)
    {
        var e = _entries[Layout.SegmentOf(firstPhys)];
        crcs.CopyTo(e.Crcs.AsSpan(Layout.BlockInSegment(firstPhys)));
    }

    /// <summary>
    /// Data of the log record at <paramref name="seq"/> was written into dead blocks of a sealed
    /// segment (slack-space recycling): their CRCs are now that data's, they count as live again
    /// (the segment's written count stays), and its summary no longer describes them.
    /// </summary>
    public void SetRecycled(long firstPhys, ReadOnlySpan<uint> crcs, ulong seq)
    {
        SetCrcs(firstPhys, crcs);
        var e = _entries[Layout.SegmentOf(firstPhys)];
        Interlocked.Add(ref e.DisplacedBlocks, -crcs.Length);
        e.Recycled = true;
        e.RecycledSeq = Math.Max(e.RecycledSeq, seq);
    }

    public void Displaced(long phys, int count) => AddDisplaced(phys, count);

    public void AddDisplaced(long phys, int count)
    {
        if (Layout.IsDataBlock(phys))
        {
            var e = _entries[Layout.SegmentOf(phys)];
            Interlocked.Add(ref e.DisplacedBlocks, count);
        }
    }
}
