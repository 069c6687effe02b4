namespace Ballast.Nbd.Protocol;

/// <summary>Handshake flags the server sends after IHAVEOPT.</summary>
[Flags]
internal enum HandshakeFlags : ushort
{
    FixedNewstyle = 1 << 0,
    NoZeroes = 1 << 1,
}

/// <summary>Client flags, sent in reply to the handshake flags.</summary>
[Flags]
internal enum ClientFlags : uint
{
    FixedNewstyle = 1 << 0,
    NoZeroes = 1 << 1,
}

/// <summary>Transmission flags, sent with the export size.</summary>
[Flags]
internal enum TransmissionFlags : ushort
{
    HasFlags = 1 << 0,
    ReadOnly = 1 << 1,
    SendFlush = 1 << 2,
    SendFua = 1 << 3,
    Rotational = 1 << 4,
    SendTrim = 1 << 5,
    SendWriteZeroes = 1 << 6,
    SendDf = 1 << 7,
    CanMultiConn = 1 << 8,
    SendResize = 1 << 9,
    SendCache = 1 << 10,
    SendFastZero = 1 << 11,
}

/// <summary>Command flags of a transmission request.</summary>
[Flags]
internal enum CommandFlags : ushort
{
    Fua = 1 << 0,
    NoHole = 1 << 1,
    Df = 1 << 2,
    ReqOne = 1 << 3,
    FastZero = 1 << 4,
}

/// <summary>Structured reply chunk flags.</summary>
[Flags]
internal enum ReplyFlags : ushort
{
    Done = 1 << 0,
}

/// <summary>Request types of the transmission phase.</summary>
internal enum NbdCommand : ushort
{
    Read = 0,
    Write = 1,
    Disc = 2,
    Flush = 3,
    Trim = 4,
    Cache = 5,
    WriteZeroes = 6,
    BlockStatus = 7,
}

/// <summary>Structured reply chunk types.</summary>
internal enum ChunkType : ushort
{
    None = 0,
    OffsetData = 1,
    OffsetHole = 2,
    BlockStatus = 5,
    Error = 0x8001,
    ErrorOffset = 0x8002,
}

/// <summary>Flags of the base:allocation metadata context.</summary>
[Flags]
internal enum AllocationFlags : uint
{
    Hole = 1 << 0,
    Zero = 1 << 1,
}
