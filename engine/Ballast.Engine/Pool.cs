using System.Diagnostics;
using Ballast.Engine.Checkpoints;
using Ballast.Engine.Cleaning;
using Ballast.Engine.Log;
using Ballast.Engine.Maps;
using Ballast.Engine.Recovery;
using Ballast.Engine.Storage;
using Ballast.Engine.Volumes;

namespace Ballast.Engine;

/// <summary>
/// A log-structured pool of volumes on one device: opens or creates it, recovers it (checkpoint
/// plus log tail), serves its volumes, and runs checkpoints and the cleaner in the background.
/// </summary>
public sealed partial class Pool : IAsyncDisposable
{
    private readonly PoolOptions _options;
    private readonly SuperblockStore _superblock;

    /// <summary>The superblock as last written and synced (tests).</summary>
    internal Log.Superblock SuperblockInUse => _superblock.Current;
    private readonly VolumeCatalog _catalog;
    private readonly SemaphoreSlim _structure = new(1, 1);
    private int _disposed;

    private Pool(PoolOptions options, IPoolStorage storage, SuperblockStore superblock, PoolLayout layout, SegmentTable segments,
        VolumeCatalog catalog, Appender appender, RecoveryReport report)
    {
        _options = options;
        Storage = storage;
        _superblock = superblock;
        Layout = layout;
        Segments = segments;
        _catalog = catalog;
        Appender = appender;
        Recovery = report;
        Geometry = MapGeometry.For(layout);
        appender.SpaceLow += () => _maintenanceSignal.Release();
        appender.Appended += bytes => Interlocked.Add(ref _bytesSinceCheckpoint, bytes);
        if (options.PrepareAheadBytes > 0 && storage.BenefitsFromPreparing)
        {
            Preparer = new SegmentPreparer(storage, layout, segments, options.PrepareAheadBytes, options.PrepareBytesPerSecond,
                // Nothing is claimed once the log is poisoned (a failed device takes no more writes).
                () => Appender.Poison != null ? int.MaxValue : Appender.DataReserve + 1,
                () => (Volatile.Read(ref Appender.DeviceBytes), Appender.Syncs), Appender.SpaceFreed, Report);
            segments.Allocated = Preparer.Wake;
        }
    }

    /// <summary>Zeroes free segments ahead of the log (null when turned off); tests drive it by hand.</summary>
    internal SegmentPreparer? Preparer { get; }

    internal IPoolStorage Storage { get; }
    internal SegmentTable Segments { get; }
    internal Appender Appender { get; }

    /// <summary>
    /// Reads data blocks a map resolved to (call after resolving): what the device holds, with the
    /// write acknowledged before its device write laid over it (see <see cref="Log.PendingWrite"/>).
    /// </summary>
    internal ValueTask ReadDataAsync(long phys, Memory<byte> buffer, bool completeInline = false)
    {
        var pending = Appender.Pending.Token;
        var read = Storage.ReadAsync(phys << PoolLayout.BlockShift, buffer, completeInline);
        return pending == 0 ? read : OverlayPendingAsync(read, pending, phys, buffer, completeInline);
    }

    [System.Runtime.CompilerServices.AsyncMethodBuilder(typeof(Async.PooledValueTaskBuilder))]
    private async ValueTask OverlayPendingAsync(ValueTask read, long pending, long phys, Memory<byte> buffer, bool completeInline)
    {
        await read.ConfigureAwait(false);
        if (!Appender.Pending.TryOverlay(pending, phys << PoolLayout.BlockShift, buffer.Span))
        {
            // That write reached the device during this read: read it from there.
            await Storage.ReadAsync(phys << PoolLayout.BlockShift, buffer, completeInline).ConfigureAwait(false);
        }
    }
    internal ReaderEpoch Epoch { get; } = new();
    internal ReadScratchPool Scratch { get; } = new();
    internal MapGeometry Geometry { get; }
    public PoolLayout Layout { get; }
    public Guid Id => _superblock.Current.PoolId;
    public RecoveryReport Recovery { get; }
    public long Capacity => (long)Layout.SegmentCount * Layout.SegmentSize;

    internal void Report(PoolLogLevel level, string message) => _options.Log?.Invoke(level, message);

    /// <summary>Opens the pool at <see cref="PoolOptions.Path"/>, creating it when the device holds no pool.</summary>
    public static Task<Pool> OpenAsync(PoolOptions options) => Task.Run(() => Open(options));

    private static Pool Open(PoolOptions options)
    {
        var sw = Stopwatch.StartNew();
        var storage = options.StorageFactory?.Invoke(0) ?? FileStorage.Open(options.Path, 0, options.ReadThreads, options.IoUring);
        try
        {
            var sb = SuperblockStore.Load(storage, out var problem);
            var pool = sb == null ? Create(options, storage, problem) : Recover(options, storage, sb);
            pool.Recovery.Duration = sw.Elapsed;
            pool.Report(PoolLogLevel.Information, $"pool {options.Path}: {pool.Recovery}");
            if (storage is FileStorage f)
            {
                pool.Report(PoolLogLevel.Information, $"pool {options.Path}: reads through {f.ReadPath}");
            }
            pool.Start();
            return pool;
        }
        catch
        {
            storage.Dispose();
            throw;
        }
    }

    private static Pool Create(PoolOptions options, IPoolStorage storage, string? problem)
    {
        if (storage.Length > 0 && !IsBlank(storage))
        {
            throw new InvalidDataException($"{storage.Description} holds data but no valid Ballast superblock ({problem}); refusing to overwrite it");
        }
        var capacity = options.Capacity > 0 ? options.Capacity : DefaultCapacity(options.Path);
        var segmentSize = options.SegmentSizeFor(capacity);
        var segmentCount = (int)Math.Min(int.MaxValue, capacity / segmentSize);
        var layout = new PoolLayout(segmentSize, segmentCount);
        storage.Grow(layout.DeviceLength);
        var sb = new Superblock
        {
            PoolId = Guid.NewGuid(),
            SegmentSize = layout.SegmentSize,
            SegmentCount = layout.SegmentCount,
            SeqReserved = 1024,
            ReplayStart = new LogPosition(0, 1, layout.FirstBatchOffset),
            CleanShutdown = true,
        };
        var store = new SuperblockStore(storage, sb);
        var segments = new SegmentTable(layout);
        segments.MarkUsed(0, SegmentState.Log, 1);
        segments[0].WriteOffset = layout.FirstBatchOffset;
        using (var header = new Buffers.AlignedBuffer(PoolLayout.BlockSize))
        {
            storage.Allocate(layout.SegmentOffset(0), layout.SegmentSize);
            new SegmentHeader(SegmentKind.Log, sb.PoolId, 0, 1).Encode(header.Span);
            storage.Write(layout.SegmentOffset(0), header.Span);
        }
        store.Update(_ => { });
        var catalog = new VolumeCatalog(MapGeometry.For(layout), 1);
        var appender = new Appender(storage, layout, segments, store, sb.ReplayStart, MaxBatch(options, layout), segments);
        return new Pool(options, storage, store, layout, segments, catalog, appender, new RecoveryReport { NewPool = true, LogEnd = sb.ReplayStart });
    }

    private static Pool Recover(PoolOptions options, IPoolStorage storage, Superblock sb)
    {
        if (sb.SegmentSize < PoolLayout.MinSegmentSize || sb.SegmentSize > PoolLayout.MaxSegmentSize || sb.SegmentCount < 8)
        {
            throw new InvalidDataException($"superblock geometry out of range (segment size {sb.SegmentSize}, {sb.SegmentCount} segments)");
        }
        var layout = new PoolLayout(sb.SegmentSize, sb.SegmentCount);
        if (storage.Length < layout.DeviceLength)
        {
            storage.Grow(layout.DeviceLength);
        }
        var store = new SuperblockStore(storage, sb);
        var segments = new SegmentTable(layout);
        var geometry = MapGeometry.For(layout);
        var report = new RecoveryReport { SuperblockGeneration = sb.Generation, CleanShutdown = sb.CleanShutdown, ReplayStart = sb.ReplayStart };
        LoadedCheckpoint? loaded = null;
        foreach (var s in sb.CheckpointSegments)
        {
            segments.MarkUsed(s, SegmentState.Checkpoint, sb.Generation);
        }
        var phase = Stopwatch.StartNew();
        if (sb.CheckpointLength > 0)
        {
            using var src = new CheckpointSource(storage, layout, sb);
            loaded = CheckpointReader.Read(src, segments, sb.PoolId, geometry);
            if (src.Consumed != sb.CheckpointLength || src.Crc != sb.CheckpointCrc)
            {
                throw new InvalidDataException($"the checkpoint fails its checksum (read {src.Consumed} of {sb.CheckpointLength} bytes); the pool cannot be opened safely");
            }
            report.CheckpointBytes = sb.CheckpointLength;
            report.CheckpointExtents = loaded.Extents;
            report.CheckpointTime = phase.Elapsed;
            phase.Restart();
            LoadSummaries(storage, layout, segments, report, options.Log);
            report.SummariesTime = phase.Elapsed;
        }
        var catalog = new VolumeCatalog(geometry, loaded?.NextVolumeId ?? 1);
        if (loaded != null)
        {
            catalog.Load(loaded.Volumes.Values);
        }
        var maxBatch = MaxBatch(options, layout);
        LogPosition end;
        ulong lastSeq;
        phase.Restart();
        using (var replayer = new LogReplayer(storage, layout, segments, sb.PoolId, maxBatch))
        {
            var applier = new ReplayApplier(catalog, segments, options.Log);
            end = replayer.Replay(sb.ReplayStart, report, applier.Apply, out lastSeq);
            report.UncommittedMoves = applier.UncommittedMoves;
        }
        report.ReplayTime = phase.Elapsed;
        lastSeq = Math.Max(lastSeq, loaded?.LastSeq ?? 0);
        report.LogEnd = end;
        report.Volumes = catalog.Count;
        var appender = new Appender(storage, layout, segments, store, end, maxBatch, segments) { LastSeq = lastSeq };
        var continueInPlace = sb.CleanShutdown && report.ReplayedBatches == 0 && end == sb.ReplayStart;
        if (!continueInPlace)
        {
            appender.StartFreshSegment();
        }
        return new Pool(options, storage, store, layout, segments, catalog, appender, report);
    }

    /// <summary>Fills the CRC tables of sealed segments from their summaries (rebuilding damaged ones).</summary>
    private static void LoadSummaries(IPoolStorage storage, PoolLayout layout, SegmentTable segments, RecoveryReport report, Action<PoolLogLevel, string>? log)
    {
        for (var i = 0; i < segments.Count; i++)
        {
            var e = segments[i];
            if (e.State != SegmentState.Log || !e.Sealed || e.Recycled)
            {
                // Open and recycled segments got their CRCs from the checkpoint.
                continue;
            }
            if (SegmentSummary.TryLoad(storage, layout, i, e))
            {
                report.SummariesLoaded++;
                continue;
            }
            var blocks = SegmentSummary.Rebuild(storage, layout, i, e);
            report.SummariesRebuilt++;
            log?.Invoke(PoolLogLevel.Warning, $"segment {i}: summary damaged; rebuilt {blocks} block checksums from its batch headers");
        }
    }

    private static int MaxBatch(PoolOptions options, PoolLayout layout)
    {
        var fit = layout.BatchLimit - layout.FirstBatchOffset - BatchFormat.MaxHeaderBytes;
        return Math.Max(PoolLayout.BlockSize, Math.Min(options.MaxBatchBytes, fit) & ~(PoolLayout.BlockSize - 1));
    }

    private static bool IsBlank(IPoolStorage storage)
    {
        using var buf = new Buffers.AlignedBuffer(2 * PoolLayout.BlockSize);
        storage.Read(0, buf.Span);
        return !buf.Span.ContainsAnyExcept((byte)0);
    }

    private static long DefaultCapacity(string path)
    {
        var dir = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path)) ?? "/";
        var free = new DriveInfo(dir).AvailableFreeSpace;
        return Math.Clamp((long)(free * 0.9), 8L * PoolLayout.MinSegmentSize, 4L << 40);
    }

    private void Start()
    {
        _superblock.Update(s => s.CleanShutdown = false);
        UpdateReserve(1);
        Appender.SpaceWait = _options.BackgroundMaintenance ? _options.SpaceWaitTimeout : TimeSpan.Zero;
        Appender.InlineMaxBytes = _options.InlineWriteMaxBytes;
        Appender.AckBeforeDeviceWrite = _options.AckBeforeDeviceWrite;
        Appender.Start();
        if (Recovery.UncommittedMoves > 0)
        {
            // Replay hands relocation records to the next commit it meets. Those of the
            // interrupted pass must not reach the next pass's commit (its redirect needs disjoint
            // copies, and a copy it did not make could win): a commit that moves nothing, logged
            // before anything else can move blocks, makes replay forget them.
            LogMetadataAsync(RecordKind.CleanCommit, null, 0, [], 0, _ => { }).GetAwaiter().GetResult();
        }
        if (_options.BackgroundMaintenance)
        {
            _maintenanceTask = Task.Run(MaintenanceLoopAsync);
            if (Preparer != null)
            {
                _prepareTask = Task.Run(PrepareLoopAsync);
            }
        }
        if (_options.ScrubAfterCrash && !Recovery.NewPool && !Recovery.CleanShutdown)
        {
            _ = Task.Run(async () =>
            {
                try
                {
                    var scrub = await ScrubAsync().ConfigureAwait(false);
                    Report(scrub.Corrupt.Count == 0 ? PoolLogLevel.Information : PoolLogLevel.Error, $"scrub after unclean shutdown: {scrub}");
                }
                catch (Exception e) when (e is ObjectDisposedException or OperationCanceledException or BlockVolumeException)
                {
                    // The pool closed while scrubbing.
                }
            });
        }
    }

    /// <summary>Orderly shutdown: drains writes, syncs, writes a final checkpoint marked clean.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        await StopMaintenanceAsync().ConfigureAwait(false);
        try
        {
            if (Appender.Poison == null)
            {
                await CheckpointCoreAsync(clean: true).ConfigureAwait(false);
            }
        }
        catch (Exception e)
        {
            Report(PoolLogLevel.Error, $"final checkpoint failed; the next open replays the log: {e.Message}");
        }
        Close();
    }

    /// <summary>Stops without writing anything more (what a crash leaves). For tests and fatal errors.</summary>
    public async Task AbandonAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }
        await StopMaintenanceAsync().ConfigureAwait(false);
        Close();
    }

    private void Close()
    {
        Appender.Dispose();
        Storage.Dispose();
        Scratch.Dispose();
        ((IDisposable?)_copyBuffer)?.Dispose();
        _superblock.Dispose();
    }
}
