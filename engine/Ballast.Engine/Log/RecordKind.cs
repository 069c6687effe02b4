namespace Ballast.Engine.Log;

/// <summary>What a log record changes. Values are on disk: never renumber.</summary>
public enum RecordKind : byte
{
    /// <summary>Data blocks for a volume range; payload is in the batch, one CRC per block.</summary>
    Data = 1,
    /// <summary>The range reads as zeroes and stays allocated (write-zeroes without deallocation).</summary>
    Zero = 2,
    /// <summary>The range is deallocated (trim/unmap); it reads as zeroes.</summary>
    Trim = 3,
    /// <summary>A volume, snapshot or clone comes into being; inline payload is its metadata.</summary>
    VolumeCreate = 10,
    /// <summary>A volume's size changes; Aux is the new size in bytes.</summary>
    VolumeResize = 11,
    /// <summary>A volume or snapshot is deleted.</summary>
    VolumeDelete = 12,
    /// <summary>A snapshot freezes the volume's map at this point of the log; inline payload is its metadata.</summary>
    SnapshotCreate = 13,
    /// <summary>The volume's attachment epoch changes; Aux is the new epoch.</summary>
    EpochSet = 14,
    /// <summary>
    /// Ends a cleaning pass: inline payload lists the emptied segments. Replay redirects map
    /// entries as the relocation records before it say, then frees those segments.
    /// </summary>
    CleanCommit = 15,
    /// <summary>
    /// Ends a defragmentation step: inline payload is the step's block range (two int64) and the
    /// segments blocks were copied from. Replay redirects the map entries in that range as the
    /// relocation records before it say; nothing is freed.
    /// </summary>
    MoveCommit = 16,
    /// <summary>Closes a segment; Aux is the next segment's index, Lba its sequence number.</summary>
    Seal = 20,
}

[Flags]
public enum RecordFlags : byte
{
    None = 0,
    /// <summary>The client asked for this record to be durable before it completes.</summary>
    Fua = 1,
    /// <summary>Copied forward by the cleaner or the defragmenter; Aux is the old physical block. Takes effect at the next CleanCommit or MoveCommit.</summary>
    Relocated = 2,
    /// <summary>
    /// Replica resync: applied only to blocks whose extent LSN is older than Aux (the primary's
    /// LSN of the data), so it never overwrites a newer live write; it does not move the volume's LSN.
    /// </summary>
    IfNewer = 4,
    /// <summary>
    /// With <see cref="IfNewer"/>: replace unconditionally (a replica's divergent block is reset
    /// to the primary's), still labelled with Aux as its LSN.
    /// </summary>
    Force = 8,
    /// <summary>
    /// Data written into dead blocks of an older sealed segment (slack-space recycling): Aux is
    /// the physical block of its first block, and the payload is there, not in the batch. The
    /// payload is synced before the record is written, so replay applies it whole (see
    /// LogReplayer.ReplayInPlace).
    /// </summary>
    InPlace = 16,
}
