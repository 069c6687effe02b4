namespace Ballast.Engine.Volumes;

/// <summary>Why a volume request failed. Frontends map these to NBD errno values and SCSI sense data.</summary>
public enum BlockError
{
    /// <summary>Malformed request (negative length, bad alignment the protocol requires, ...): EINVAL.</summary>
    InvalidArgument,
    /// <summary>Offset or offset+length beyond the end of the volume: EINVAL / LBA OUT OF RANGE.</summary>
    OutOfRange,
    /// <summary>offset+length overflows: EOVERFLOW.</summary>
    Overflow,
    /// <summary>Write to a read-only volume or snapshot: EPERM / DATA PROTECT.</summary>
    ReadOnly,
    /// <summary>The pool has no free space for data: ENOSPC / SPACE ALLOCATION FAILED.</summary>
    NoSpace,
    /// <summary>Device error or a block failed its checksum: EIO / MEDIUM ERROR.</summary>
    Io,
    /// <summary>The volume was deleted or the pool is shutting down: ESHUTDOWN.</summary>
    Gone,
    /// <summary>Not enough in-sync replicas or a newer primary took over: EIO / sense per protocol.</summary>
    Fenced,
}

public sealed class BlockVolumeException : IOException
{
    public BlockVolumeException(BlockError error, string message, Exception? inner = null) : base(message, inner) => Error = error;

    public BlockError Error { get; }
}
