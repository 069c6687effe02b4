namespace Ballast.Nbd.Protocol;

/// <summary>Option types of the handshake phase ("Option types").</summary>
internal enum NbdOption : uint
{
    ExportName = 1,
    Abort = 2,
    List = 3,
    PeekExport = 4,
    StartTls = 5,
    Info = 6,
    Go = 7,
    StructuredReply = 8,
    ListMetaContext = 9,
    SetMetaContext = 10,
    ExtendedHeaders = 11,
}

/// <summary>Option reply types ("Option reply types"); errors have bit 31 set.</summary>
internal enum NbdReplyType : uint
{
    Ack = 1,
    Server = 2,
    Info = 3,
    MetaContext = 4,
    ErrUnsup = 0x80000001,
    ErrPolicy = 0x80000002,
    ErrInvalid = 0x80000003,
    ErrPlatform = 0x80000004,
    ErrTlsReqd = 0x80000005,
    ErrUnknown = 0x80000006,
    ErrShutdown = 0x80000007,
    ErrBlockSizeReqd = 0x80000008,
    ErrTooBig = 0x80000009,
}

/// <summary>Information types of NBD_REP_INFO (NBD_OPT_INFO / NBD_OPT_GO).</summary>
internal enum NbdInfo : ushort
{
    Export = 0,
    Name = 1,
    Description = 2,
    BlockSize = 3,
}
