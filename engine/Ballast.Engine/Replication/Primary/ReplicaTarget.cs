namespace Ballast.Engine.Replication.Primary;

/// <summary>Where one replica of a volume stands, seen from the primary.</summary>
public enum ReplicaState
{
    /// <summary>The link to its node is down.</summary>
    Offline,
    /// <summary>Reachable but missing writes: waits for a resync.</summary>
    OutOfSync,
    /// <summary>Receiving live writes while older changes are copied over.</summary>
    Resyncing,
    /// <summary>Has every acknowledged write; client writes wait for it.</summary>
    InSync,
}

/// <summary>One replica of one volume: its node's link, its handle there, its state and progress.</summary>
internal sealed class ReplicaTarget(string node, PeerLink link)
{
    public string Node { get; } = node;
    public PeerLink Link { get; } = link;

    private int _state = (int)ReplicaState.Offline;

    public ReplicaState State
    {
        get => (ReplicaState)Volatile.Read(ref _state);
        set => Volatile.Write(ref _state, (int)value);
    }

    /// <summary>The volume's handle on the link's current connection, and that connection's generation.</summary>
    public uint Handle;
    public int Generation = -1;

    /// <summary>LSN the replica last reported it holds (when opened or resynced), for status.</summary>
    public long ReportedLsn;
    public long LastAckedLsn;
    public string? LastError;

    public long ResyncTotalBytes;
    public long ResyncDoneBytes;
    public long ResyncStartedTicks;
    /// <summary>Bytes moved by resyncs of this replica since the daemon started.</summary>
    public long ResyncedBytes;

    /// <summary>Set while a resync job runs for this replica.</summary>
    public int Resyncing;
}
