namespace Ballast.Control;

public sealed record CreateVolumeRequest(string Name, long Size, int BlockSize = 4096, bool ReadOnly = false, int Replicas = 1, int? MinReplicas = null);

/// <summary>Make a node (this daemon's when Node is null) the volume's primary.</summary>
public sealed record AttachRequest(string? Node = null, bool Force = false);

/// <summary>Where replicas differ from the primary (empty when every in-sync copy matches).</summary>
public sealed record VerifyDto(string Volume, IReadOnlyList<ReplicaDto> Replicas, IReadOnlyList<DifferenceDto> Differences);

public sealed record DifferenceDto(string Node, long Offset, long Length);

/// <summary>Defragment a volume, copying no faster than RateBytesPerSecond when it is set.</summary>
public sealed record DefragRequest(long? RateBytesPerSecond = null);

/// <summary>
/// What a defragmentation did: windows of <see cref="WindowBytes"/> looked at and rewritten, the
/// bytes copied, the runs of blocks the volume's data formed on the device before and after, and
/// why it stopped early (null when it reached the volume's end; ShortOfSpace when free space ran out).
/// </summary>
public sealed record DefragDto(string Volume, long WindowBytes, long WindowsScanned, long WindowsMoved, long BytesMoved, long RunsBefore, long RunsAfter, double Seconds, string? Stopped, bool ShortOfSpace);

/// <summary>One copy of a replicated volume: node, role, state, LSN, lag, resync progress.</summary>
public sealed record ReplicaDto(string Node, string Role, string State, long Lsn, long Lag, double? ResyncPercent, double? EtaSeconds, long ResyncedBytes, string? Error);

public sealed record ResizeVolumeRequest(long Size, bool Force = false);

public sealed record CreateSnapshotRequest(string Name);

public sealed record CloneRequest(string Name);

/// <summary>A volume or snapshot as the API shows it.</summary>
public sealed record VolumeDto(
    string Name,
    string Kind,
    long Size,
    int BlockSize,
    bool ReadOnly,
    string? Parent,
    DateTimeOffset Created,
    long Lsn,
    IReadOnlyList<string> Snapshots,
    VolumeIoDto Io,
    IReadOnlyList<ExportDto> Exports,
    IReadOnlyList<ClientDto> Clients,
    IReadOnlyList<ReplicaDto>? Replicas = null,
    int? MinReplicas = null,
    VolumeUsageDto? Usage = null);

/// <summary>
/// Space a volume's data takes in the pool (blocks shared with its snapshots or parent count too),
/// the runs of blocks that lie together on the device (many small runs: slow to read in order),
/// and bytes written as zeroes (no data space). Given by inspect, not by list: it walks the map.
/// </summary>
public sealed record VolumeUsageDto(long DataBytes, long DataRuns, long ZeroBytes);

/// <summary>Totals since the daemon started, and rates over the last sampling interval.</summary>
public sealed record VolumeIoDto(
    long Reads, long ReadBytes, long Writes, long WriteBytes, long Flushes, long Trims, long TrimBytes,
    long Errors, long InFlight, double ReadIops, double WriteIops, double ReadBytesPerSecond, double WriteBytesPerSecond);

/// <summary>
/// How a volume is reachable: protocol, name (NBD export, or iSCSI target IQN with the volume's
/// LUN) and addresses clients take (nbd:// and iscsi:// URLs); iSCSI also lists its portals.
/// </summary>
public sealed record ExportDto(string Protocol, string Name, IReadOnlyList<string> Addresses, string? Volume = null, int? Lun = null, IReadOnlyList<string>? Portals = null);

/// <summary>
/// A connected client of one volume. For iSCSI: Initiator is the initiator's IQN, Target the
/// target it logged in to (the volume's own or a group), and the counts are those of the volume's LUN.
/// </summary>
public sealed record ClientDto(string Protocol, string Peer, string Volume, DateTimeOffset Since, long Requests, long BytesRead, long BytesWritten, string? Initiator = null, string? Target = null);

public sealed record PoolDto(
    string Path, long Capacity, long Used, long Live, long Reclaimable, long Free, int SegmentSize, int Segments, int FreeSegments,
    double WriteAmplification, long CleanerPasses, long CleanerSegmentsFreed, long CleanerBytesMoved, long Checkpoints, bool Healthy);

/// <summary>What status reports; Provisioned is the sum of the volumes' sizes (thin: it may exceed the pool's capacity).</summary>
public sealed record StatusDto(string Version, DateTimeOffset Started, PoolDto Pool, int Volumes, int Snapshots, IReadOnlyList<ClientDto> Clients, IReadOnlyList<VolumeRateDto> Rates, long Provisioned = 0);

public sealed record VolumeRateDto(string Volume, double ReadIops, double WriteIops, double ReadBytesPerSecond, double WriteBytesPerSecond);

public sealed record ExportListDto(IReadOnlyList<ExportDto> Exports, IReadOnlyList<ClientDto> Clients);

/// <summary>Every error the API returns: what went wrong, what to do, and a stable code.</summary>
public sealed record ErrorDto(string Code, string Error, string? Hint = null);

/// <summary>Stable error codes; ballastctl turns each into its own exit status.</summary>
public static class ErrorCodes
{
    public const string NotFound = "not_found";
    public const string Exists = "exists";
    public const string InUse = "in_use";
    public const string Invalid = "invalid";
    public const string Refused = "refused";
    public const string NoSpace = "no_space";
    public const string Unauthorized = "unauthorized";
    public const string Internal = "internal";
}
