using Ballast.Engine.Maps;

namespace Ballast.Engine.Volumes;

/// <summary>
/// The engine's live state of one volume or snapshot. <see cref="Lock"/> guards the map and
/// sizes; the appender thread is the only writer of the map, readers take the lock around lookups.
/// </summary>
internal sealed class VolumeState
{
    public VolumeState(VolumeMeta meta, ExtentMap map)
    {
        Meta = meta;
        Map = map;
        Size = meta.Size;
        Epoch = meta.Epoch;
        NextLsn = meta.BaseLsn;
        AppliedLsn = meta.BaseLsn;
    }

    public readonly object Lock = new();
    public readonly WriteGate Gate = new();
    public readonly VolumeCounters Counters = new();

    /// <summary>Metadata as created (name, ids, block size). Size and epoch change and live below.</summary>
    public VolumeMeta Meta { get; set; }
    public ExtentMap Map { get; set; }
    public uint Id => Meta.Id;
    public string Name => Meta.Name;
    public bool IsSnapshot => Meta.Kind == VolumeKind.Snapshot;
    public bool IsReadOnly => IsSnapshot || (Meta.Flags & VolumeFlags.ReadOnly) != 0;
    public long Size;
    public uint Epoch;

    /// <summary>Last LSN handed out (under the appender's queue lock).</summary>
    public long NextLsn;

    /// <summary>LSN of the last record applied to the map (appender thread); a checkpoint records this.</summary>
    public long AppliedLsn;

    /// <summary>During replay: records at or below this LSN are already in the checkpoint.</summary>
    public long CheckpointLsn;

    public volatile bool Deleted;

    /// <summary>Set on the primary of a replicated volume: its records go to the replicas too.</summary>
    public Replication.IRecordForwarder? Forwarder;

    /// <summary>A newer primary took over this replicated volume: clients' writes are refused.</summary>
    public volatile bool Fenced;

    /// <summary>Snapshots taken of this volume (ids), for listing and for refusing deletes.</summary>
    public readonly List<uint> Snapshots = [];

    public VolumeMeta CurrentMeta() => Meta with { Size = Size, Epoch = Epoch };
}
