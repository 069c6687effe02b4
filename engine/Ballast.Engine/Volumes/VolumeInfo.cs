namespace Ballast.Engine.Volumes;

/// <summary>What the catalog knows about a volume or snapshot, for listings and the control API.</summary>
public sealed record VolumeInfo(
    string Name,
    VolumeKind Kind,
    Guid Uid,
    long Size,
    int LogicalBlockSize,
    bool ReadOnly,
    string? Parent,
    DateTimeOffset Created,
    long Lsn,
    uint Epoch,
    IReadOnlyList<string> Snapshots);
