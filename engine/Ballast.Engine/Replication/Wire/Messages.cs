namespace Ballast.Engine.Replication.Wire;

/// <summary>Opens a copy of a volume on a replica (creating it when asked). Sent as JSON.</summary>
public sealed record OpenRequest(
    string Name,
    Guid Uid,
    long Size,
    int BlockSize,
    uint Epoch,
    string Primary,
    IReadOnlyList<string> Replicas,
    int MinReplicas,
    bool Create,
    bool Probe = false);

/// <summary>
/// The replica's view: the LSN it is complete up to (its resync floor if a resync was cut off,
/// else the last LSN it applied), its epoch, and the LSN it applied last.
/// </summary>
public sealed record OpenResponse(uint Handle, long StableLsn, long AppliedLsn, uint Epoch, bool Created);

/// <summary>Volume lifecycle changes the primary passes on.</summary>
public sealed record ControlRequest(string Op, long Size = 0, string? Snapshot = null, bool Force = false);
