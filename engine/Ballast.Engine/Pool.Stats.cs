using Ballast.Engine.Log;
using Ballast.Engine.Maps;
using Ballast.Engine.Volumes;

namespace Ballast.Engine;

public sealed partial class Pool
{
    private long _checkpointDeviceBytes;

    /// <summary>Where the appender thread spent its time (diagnostics for benchmarks).</summary>
    public (TimeSpan Busy, TimeSpan Write, TimeSpan Sync) AppenderTimes =>
        (System.Diagnostics.Stopwatch.GetElapsedTime(0, Appender.BusyTicks), System.Diagnostics.Stopwatch.GetElapsedTime(0, Appender.WriteTicks), System.Diagnostics.Stopwatch.GetElapsedTime(0, Appender.SyncTicks));

    /// <summary>
    /// True when the write path works: no device error has stopped the log, and the appender
    /// answers a no-op at a batch boundary within <paramref name="timeout"/> (it is not stuck).
    /// </summary>
    public async Task<bool> ProbeAsync(TimeSpan timeout)
    {
        if (Appender.Poison != null || Volatile.Read(ref _disposed) != 0)
        {
            return false;
        }
        try
        {
            await Appender.RunAtBoundaryAsync(static () => { }).WaitAsync(timeout).ConfigureAwait(false);
            return Appender.Poison == null;
        }
        catch (TimeoutException)
        {
            return false;
        }
    }

    public PoolStats GetStats()
    {
        int log = 0, cp = 0, prepared = 0;
        long live = 0, used = 0;
        var dataBlocks = Layout.DataBlocksPerSegment;
        for (var i = 0; i < Segments.Count; i++)
        {
            var e = Segments[i];
            switch (e.State)
            {
                case SegmentState.Log:
                    log++;
                    used += Layout.SegmentSize;
                    live += (long)Math.Clamp(e.WrittenBlocks - e.DisplacedBlocks, 0, dataBlocks) << PoolLayout.BlockShift;
                    break;
                case SegmentState.Checkpoint:
                    cp++;
                    break;
                case SegmentState.Free:
                    prepared += e.Prepared && !e.Preparing ? 1 : 0;
                    break;
            }
        }
        var client = Appender.ClientDataBlocks << PoolLayout.BlockShift;
        var device = Appender.DeviceBytes + Interlocked.Read(ref _checkpointDeviceBytes);
        return new PoolStats
        {
            CapacityBytes = Capacity,
            SegmentSize = Layout.SegmentSize,
            Segments = Segments.Count,
            FreeSegments = Segments.FreeCount,
            LogSegments = log,
            CheckpointSegments = cp,
            UsedBytes = used,
            LiveBytes = live,
            ReclaimableBytes = Math.Max(0, used - live),
            DeviceBytesWritten = device,
            ClientBytesWritten = client,
            CleanerBytesMoved = Appender.RelocatedBlocks << PoolLayout.BlockShift,
            WriteAmplification = client == 0 ? 0 : (double)device / client,
            Batches = Appender.Batches,
            InlineBatches = Volatile.Read(ref Appender.InlineBatches),
            EarlyAcks = Volatile.Read(ref Appender.EarlyAcks),
            BorrowedBytes = Volatile.Read(ref Appender.BorrowedBytes),
            Syncs = Appender.Syncs,
            Checkpoints = _checkpoints,
            LastCheckpointBytes = _lastCheckpointBytes,
            LastCheckpointMs = _lastCheckpointDuration.TotalMilliseconds,
            CleanerPasses = _cleanerStats.Passes,
            CleanerSegmentsFreed = _cleanerStats.SegmentsFreed,
            CleanerReads = _cleanerStats.Reads,
            WritesWaitedForSpace = Volatile.Read(ref Appender.Parks),
            RecycledBlocksWritten = Volatile.Read(ref Appender.RecycledBlocks),
            PreparedBytesZeroed = Preparer?.ZeroedBytes ?? 0,
            PreparedFreeSegments = prepared,
            Volumes = _catalog.Count,
            Poisoned = Appender.Poison != null,
        };
    }

    /// <summary>
    /// Walks a volume's map for <see cref="VolumeUsage"/>, 64 MiB of the volume per hold of its
    /// lock: at most 16K extents, a fraction of a millisecond, so a map of millions of extents
    /// does not hold up the volume's I/O for the whole walk.
    /// </summary>
    public VolumeUsage GetUsage(string name)
    {
        const long Chunk = 1L << 14;
        var v = FindState(name);
        long data = 0, runs = 0, zero = 0, lastEnd = -1, lastPhysEnd = -1;
        void Count(in ExtentMap.MapPieceInfo p)
        {
            if (p.Kind == ExtentKind.Data)
            {
                data += p.Count;
                // The map splits extents at its windows and this walk at its chunks: pieces
                // that continue each other in the volume and on the device are one run.
                if (p.Block != lastEnd || p.Phys != lastPhysEnd)
                {
                    runs++;
                }
                lastEnd = p.Block + p.Count;
                lastPhysEnd = p.Phys + p.Count;
            }
            else if (p.Kind == ExtentKind.Zero)
            {
                zero += p.Count;
            }
        }
        for (long start = 0; ; start += Chunk)
        {
            lock (v.Lock)
            {
                if (v.Deleted || start >= v.Map.CapacityBlocks)
                {
                    break;
                }
                v.Map.Visit(start, start + Chunk, -1, Count);
            }
        }
        return new VolumeUsage(data << PoolLayout.BlockShift, runs, zero << PoolLayout.BlockShift);
    }

    /// <summary>
    /// Reads every block a map references and checks its CRC. Reports each damaged block with the
    /// volumes and offsets that reference it; reads of those blocks fail with an I/O error.
    /// </summary>
    public async Task<ScrubReport> ScrubAsync(CancellationToken ct = default)
    {
        var report = new ScrubReport();
        var refs = new List<(VolumeState Volume, long Block, long Phys, int Count)>();
        foreach (var v in _catalog.All())
        {
            lock (v.Lock)
            {
                v.Map.Visit(0, v.Map.CapacityBlocks, 0, (in ExtentMap.MapPieceInfo p) =>
                {
                    if (p.Kind == ExtentKind.Data)
                    {
                        refs.Add((v, p.Block, p.Phys, p.Count));
                    }
                });
            }
        }
        var checkedBlocks = new HashSet<long>();
        using var buf = new Buffers.AlignedBuffer(PoolLayout.BlockSize * ExtentMap.WindowBlocks);
        foreach (var (vol, block, phys, count) in refs)
        {
            ct.ThrowIfCancellationRequested();
            var epoch = Epoch.Enter();
            try
            {
                await ReadDataAsync(phys, buf.Memory[..(count << PoolLayout.BlockShift)]).ConfigureAwait(false);
                for (var k = 0; k < count; k++)
                {
                    var fresh = checkedBlocks.Add(phys + k);
                    if (fresh)
                    {
                        report.BlocksChecked++;
                    }
                    if (!Intact(buf.Span.Slice(k << PoolLayout.BlockShift, PoolLayout.BlockSize), phys + k)
                        && await StillDamagedAsync(vol, block + k, phys + k, buf.Memory.Slice(k << PoolLayout.BlockShift, PoolLayout.BlockSize)).ConfigureAwait(false))
                    {
                        report.Corrupt.Add(new CorruptBlock(vol.Name, (block + k) << PoolLayout.BlockShift, phys + k));
                    }
                }
            }
            finally
            {
                Epoch.Exit(epoch);
            }
        }
        return report;
    }

    private bool Intact(ReadOnlySpan<byte> data, long phys) => Segments.TryGetCrc(phys, out var crc) && Crc32C.Compute(data) == crc;

    /// <summary>
    /// The references were collected before this read, so the volume may have moved on and the
    /// block been reused (the cleaner hands dead blocks to new writes): a mismatch counts only if
    /// the volume still maps that block there and a second read still fails.
    /// </summary>
    private async Task<bool> StillDamagedAsync(VolumeState vol, long block, long phys, Memory<byte> scratch)
    {
        var mapped = false;
        lock (vol.Lock)
        {
            if (!vol.Deleted)
            {
                vol.Map.Visit(block, block + 1, 0, (in ExtentMap.MapPieceInfo p) => mapped |= p.Kind == ExtentKind.Data && p.Phys + (block - p.Block) == phys);
            }
        }
        if (!mapped)
        {
            return false;
        }
        await Storage.ReadAsync(phys << PoolLayout.BlockShift, scratch).ConfigureAwait(false);
        return !Intact(scratch.Span, phys);
    }
}

public sealed record CorruptBlock(string Volume, long Offset, long PoolBlock);

public sealed class ScrubReport
{
    public long BlocksChecked { get; set; }
    public List<CorruptBlock> Corrupt { get; } = [];

    public override string ToString() => Corrupt.Count == 0
        ? $"{BlocksChecked} blocks checked, all intact"
        : $"{BlocksChecked} blocks checked, {Corrupt.Count} damaged: " + string.Join(", ", Corrupt.Take(10).Select(c => $"{c.Volume} offset {c.Offset} (pool block {c.PoolBlock})")) + (Corrupt.Count > 10 ? ", ..." : "");
}
