namespace Ballast.Engine.Replication.Wire;

/// <summary>Frames of the replication protocol. A response has the request's type with bit 7 set.</summary>
public enum FrameType : byte
{
    /// <summary>First frame on a connection: the sender's node id (UTF-8).</summary>
    Hello = 1,
    /// <summary>Opens (or creates) a volume copy on the receiver; JSON <see cref="OpenRequest"/>. Answers <see cref="OpenResponse"/>.</summary>
    Open = 2,
    /// <summary>A data record: <see cref="RecordHeader"/> then the blocks.</summary>
    Write = 10,
    /// <summary>A zero record: <see cref="RecordHeader"/>.</summary>
    Zero = 11,
    /// <summary>A trim record: <see cref="RecordHeader"/>.</summary>
    Trim = 12,
    /// <summary>Make everything sent before durable.</summary>
    Flush = 13,
    /// <summary>A resync copy: <see cref="RecordHeader"/> (Lsn = the data's LSN, Flags = kind and mode) then the blocks.</summary>
    Resync = 14,
    /// <summary>Resync starts from this LSN: the replica records it durably (reports it until resync ends).</summary>
    ResyncBegin = 15,
    ResyncEnd = 16,
    /// <summary>Blocks the receiver changed after an LSN (i64): answers (lba i64, blocks i32) pairs.</summary>
    Changed = 17,
    /// <summary>Raise the volume's epoch (u32): records from older epochs are refused from then on.</summary>
    SetEpoch = 18,
    /// <summary>CRC32C per chunk of a range: lba i64, blocks i32, chunk blocks i32; answers the CRCs.</summary>
    Checksums = 19,
    /// <summary>Volume lifecycle (resize, delete, snapshot) as JSON <see cref="ControlRequest"/>.</summary>
    Control = 20,
    Ping = 30,
    ResponseBit = 0x80,
}

/// <summary>Outcome codes in responses.</summary>
public enum ReplicationStatus : uint
{
    Ok = 0,
    /// <summary>The receiver's copy is at a newer epoch: the sender is no longer the primary.</summary>
    Fenced = 1,
    NotFound = 2,
    Invalid = 3,
    Io = 4,
    NoSpace = 5,
    Gone = 6,
}
