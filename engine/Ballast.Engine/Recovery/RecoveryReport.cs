using Ballast.Engine.Log;

namespace Ballast.Engine.Recovery;

/// <summary>What opening a pool found: checkpoint, replayed tail, and what was discarded and why.</summary>
public sealed class RecoveryReport
{
    public bool NewPool { get; set; }
    public bool CleanShutdown { get; set; }
    public ulong SuperblockGeneration { get; set; }
    public long CheckpointBytes { get; set; }
    public long CheckpointExtents { get; set; }
    public int Volumes { get; set; }
    public int SummariesLoaded { get; set; }
    public int SummariesRebuilt { get; set; }
    public LogPosition ReplayStart { get; set; }
    public LogPosition LogEnd { get; set; }
    public int ReplayedSegments { get; set; }
    public long ReplayedBatches { get; set; }
    public long ReplayedRecords { get; set; }
    public long ReplayedBytes { get; set; }
    /// <summary>Why replay stopped where it did (the end of a clean log reads "no batch magic").</summary>
    public string StopReason { get; set; } = "";
    /// <summary>Batches of this log found beyond the stop point and discarded (torn or never synced).</summary>
    public int DiscardedBatches { get; set; }
    public long DiscardedBytes { get; set; }
    /// <summary>
    /// Blocks of writes into recycled holes that no longer held that write's data at replay:
    /// recycled again after a later write replaced them (a later record maps the block
    /// elsewhere), or damaged since (reading them fails their checksum).
    /// </summary>
    public int InPlaceBlocksMismatched { get; set; }
    /// <summary>Relocation records at the log's end without their commit (a cleaning pass or defragmentation step a crash interrupted); their copies are unused.</summary>
    public int UncommittedMoves { get; set; }
    public TimeSpan Duration { get; set; }
    /// <summary>Where the opening time went: reading the checkpoint, loading the sealed segments' summaries, replaying the tail.</summary>
    public TimeSpan CheckpointTime { get; set; }
    public TimeSpan SummariesTime { get; set; }
    public TimeSpan ReplayTime { get; set; }

    public override string ToString() => NewPool
        ? "new pool created"
        : $"opened in {Duration.TotalMilliseconds:F0} ms (checkpoint {CheckpointTime.TotalMilliseconds:F0} ms, "
          + $"{SummariesLoaded + SummariesRebuilt} segment summaries {SummariesTime.TotalMilliseconds:F0} ms, replay {ReplayTime.TotalMilliseconds:F0} ms): "
          + $"{Volumes} volumes, checkpoint {CheckpointBytes / 1024} KiB ({CheckpointExtents} extents), "
          + $"replayed {ReplayedBatches} batches / {ReplayedRecords} records / {ReplayedBytes / 1024} KiB from {ReplayStart}; "
          + $"log ends at {LogEnd} ({StopReason})"
          + (DiscardedBatches > 0 ? $"; discarded {DiscardedBatches} torn or unsynced batch(es) ({DiscardedBytes / 1024} KiB) from there on" : "")
          + (InPlaceBlocksMismatched > 0 ? $"; {InPlaceBlocksMismatched} block(s) of writes into recycled holes no longer held their data (replaced and recycled again, or damaged)" : "")
          + (UncommittedMoves > 0 ? $"; {UncommittedMoves} relocation records of an interrupted cleaning pass or defragmentation step left unused" : "")
          + (SummariesRebuilt > 0 ? $"; {SummariesRebuilt} damaged segment summaries rebuilt" : "")
          + (CleanShutdown ? "; last shutdown was clean" : "; last shutdown was not clean");
}
