using System.Diagnostics;
using Ballast.Engine.Checkpoints;
using Ballast.Engine.Cleaning;
using Ballast.Engine.Log;

namespace Ballast.Engine;

/// <summary>
/// Background work: checkpoints (bound replay time, release cleaned segments) and the cleaner
/// (keeps free segments available). One maintenance lock serialises them, and explicit calls
/// from tests or the control API take the same lock.
/// </summary>
public sealed partial class Pool
{
    private readonly SemaphoreSlim _maintenance = new(1, 1);
    private readonly SemaphoreSlim _maintenanceSignal = new(0, int.MaxValue);
    private readonly CancellationTokenSource _stop = new();
    private Task? _maintenanceTask;
    private Task? _prepareTask;
    private long _bytesSinceCheckpoint;
    private long _lastCheckpointTicks = Environment.TickCount64;
    private long _checkpoints;
    private long _lastCheckpointBytes;
    private TimeSpan _lastCheckpointDuration;
    private readonly CleanerStats _cleanerStats = new();

    /// <summary>Writes a checkpoint now.</summary>
    public async Task CheckpointAsync()
    {
        await CheckpointCoreAsync(clean: false).ConfigureAwait(false);
    }

    private async Task CheckpointCoreAsync(bool clean)
    {
        await _maintenance.WaitAsync().ConfigureAwait(false);
        try
        {
            await WriteCheckpointLockedAsync(clean).ConfigureAwait(false);
        }
        finally
        {
            _maintenance.Release();
        }
    }

    /// <summary>Capture at a batch boundary, serialise, commit via the superblock, then release what the old state held.</summary>
    private async Task WriteCheckpointLockedAsync(bool clean)
    {
        var sw = Stopwatch.StartNew();
        CheckpointCapture? capture = null;
        await Appender.RunAtBoundaryAsync(() =>
        {
            if (Appender.Poison is { } poison)
            {
                // Checked here, at the boundary: a write acknowledged before its device write may
                // have failed while this capture waited, leaving the map pointing at blocks that
                // were never written. Persisting that map would turn an unflushed write into a
                // lasting read error; recovery from the last checkpoint and the log has the truth.
                throw new InvalidOperationException($"no checkpoint after a device error: {poison.Message}", poison);
            }
            capture = CheckpointCapture.Take(Appender.Position, Appender.LastSeq, _catalog.NextId, _catalog.All(), Segments);
            if (clean)
            {
                Appender.RefuseWrites();
            }
        }).ConfigureAwait(false);
        var generation = _superblock.Current.Generation + 1;
        var sink = new CheckpointSink(Storage, Layout, Segments, Id, generation);
        try
        {
            await Task.Run(() =>
            {
                CheckpointWriter.Write(sink, capture!, Segments, Id, generation);
                sink.Complete();
            }).ConfigureAwait(false);
        }
        catch
        {
            sink.Abandon();
            sink.Dispose();
            capture!.Release();
            throw;
        }
        capture!.Release();
        var old = _superblock.Current.CheckpointSegments;
        try
        {
            _superblock.Update(s =>
            {
                s.ReplayStart = capture.Position;
                s.CheckpointSegments = [.. sink.Segments];
                s.CheckpointLength = sink.Length;
                s.CheckpointCrc = sink.Crc;
                s.CleanShutdown = clean;
                s.SeqReserved = Math.Max(s.SeqReserved, Appender.LastSeq);
            });
        }
        catch
        {
            // The old checkpoint stays authoritative here, but the failed write may still have
            // reached the disk naming this one: its segments stay allocated until a restart
            // (which frees whatever the superblock it finds does not name), never overwritten.
            sink.Dispose();
            throw;
        }
        var cpSegments = sink.Segments.Count;
        Interlocked.Add(ref _checkpointDeviceBytes, sink.Length + ((long)cpSegments << PoolLayout.BlockShift) + PoolLayout.BlockSize);
        sink.Dispose();
        foreach (var s in old)
        {
            if (Segments.StateOf(s) == SegmentState.Checkpoint)
            {
                Segments.Release(s);
            }
        }
        UpdateReserve(cpSegments);
        Appender.SpaceFreed();
        Interlocked.Exchange(ref _bytesSinceCheckpoint, 0);
        _lastCheckpointTicks = Environment.TickCount64;
        _checkpoints++;
        _lastCheckpointBytes = sink.Length;
        _lastCheckpointDuration = sw.Elapsed;
        Report(PoolLogLevel.Debug, $"checkpoint {generation}: {sink.Length / 1024} KiB in {cpSegments} segment(s), {sw.ElapsedMilliseconds} ms, replay starts at {capture.Position}");
    }

    private bool TryDiscard(int segment)
    {
        try
        {
            Storage.Discard(Layout.SegmentOffset(segment), Layout.SegmentSize);
            return true;
        }
        catch (Exception e)
        {
            Report(PoolLogLevel.Warning, $"could not punch freed segment {segment}: {e.Message}");
            return false;
        }
    }

    /// <summary>
    /// Segments data writes must leave free: one for metadata and trims, two for the cleaner to
    /// copy into, and room for the next checkpoint beside the current one.
    /// </summary>
    private void UpdateReserve(int checkpointSegments)
    {
        Appender.MinReserve = checkpointSegments + 1;
        Appender.DataReserve = checkpointSegments + 1 + 4;
        Appender.CleanThreshold = CleanerStart();
        // Recycling starts a few segments above the point where the cleaner must copy.
        Appender.RecycleBelow = _options.RecycleHoles ? Math.Max(CleanerStart(), Appender.DataReserve + 4) : 0;
    }

    private async Task MaintenanceLoopAsync()
    {
        var ct = _stop.Token;
        while (!ct.IsCancellationRequested)
        {
            try
            {
                await _maintenanceSignal.WaitAsync(TimeSpan.FromSeconds(1), ct).ConfigureAwait(false);
                if (Appender.Poison != null)
                {
                    continue;
                }
                if (NeedsCleaning(out _) || Appender.ParkedCount > 0)
                {
                    var freed = await CleanAsync(ct).ConfigureAwait(false);
                    if (freed == 0 && OutOfSpace())
                    {
                        // Writes may have parked while a pass that only looked for holes ran:
                        // only a pass that saw them waiting and still found nothing fails them.
                        freed = await CleanAsync(ct).ConfigureAwait(false);
                        if (freed == 0 && OutOfSpace())
                        {
                            Appender.FailParked("the cleaner found no space to reclaim");
                        }
                    }
                }
                var due = Interlocked.Read(ref _bytesSinceCheckpoint) >= Math.Min(_options.CheckpointEveryBytes, Capacity / 8)
                    || (Interlocked.Read(ref _bytesSinceCheckpoint) > 0 && Environment.TickCount64 - _lastCheckpointTicks >= _options.CheckpointInterval.TotalMilliseconds);
                if (due)
                {
                    await CheckpointAsync().ConfigureAwait(false);
                }
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                break;
            }
            catch (Exception e)
            {
                Report(PoolLogLevel.Error, $"maintenance failed: {e.Message}");
                try
                {
                    await Task.Delay(TimeSpan.FromSeconds(1), ct).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    break;
                }
            }
        }
    }

    /// <summary>Writes wait for space, no segment is free above the reserve and no hole is left.</summary>
    private bool OutOfSpace() => Appender.ParkedCount > 0 && Segments.FreeCount + Segments.PreparingCount <= Appender.DataReserve && Appender.HolesRemaining == 0;

    private async Task PrepareLoopAsync()
    {
        try
        {
            await Preparer!.RunAsync(_stop.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (_stop.IsCancellationRequested)
        {
        }
        catch (Exception e)
        {
            Report(PoolLogLevel.Error, $"preparing free segments failed: {e.Message}");
        }
    }

    private async Task StopMaintenanceAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        foreach (var task in new[] { _maintenanceTask, _prepareTask })
        {
            if (task == null)
            {
                continue;
            }
            try
            {
                await task.ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
            }
        }
    }

    /// <summary>True when free segments are below the start threshold (or writes already found no space).</summary>
    private bool NeedsCleaning(out int wantFree)
    {
        var start = CleanerStart();
        wantFree = Math.Max(start + 1, (int)(Segments.Count * _options.CleanerTargetFree));
        return Segments.FreeCount <= Math.Max(start, Appender.RecycleBelow);
    }

    /// <summary>
    /// Free segments at which the cleaner starts: a fraction of the pool, at least one above the
    /// reserve. A wider floor (4 above) gave no better write p99 at 80% full and cost WA in small
    /// pools (1 GiB: 3.69 -> 3.94), as every segment held free does.
    /// </summary>
    private int CleanerStart() => Math.Max(Appender.DataReserve + 1, (int)(Segments.Count * _options.CleanerStartFree));
}
