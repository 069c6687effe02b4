using Ballast.Engine.Volumes;

namespace Ballast.Nbd.Protocol;

/// <summary>Error values of the transmission phase ("Error values").</summary>
internal static class NbdErrno
{
    public const uint EPerm = 1;
    public const uint EIo = 5;
    public const uint ENoMem = 12;
    public const uint EInval = 22;
    public const uint ENoSpc = 28;
    public const uint EOverflow = 75;
    public const uint ENotSup = 95;
    public const uint EShutdown = 108;

    /// <summary>
    /// The spec's choice per failure: writes beyond the end are ENOSPC, reads and trims beyond
    /// it EINVAL; writes to a read-only export EPERM; a lost quorum (fenced) is EIO.
    /// </summary>
    public static uint From(BlockError error, bool isWrite) => error switch
    {
        BlockError.InvalidArgument => EInval,
        BlockError.OutOfRange or BlockError.Overflow => isWrite ? ENoSpc : EInval,
        BlockError.ReadOnly => EPerm,
        BlockError.NoSpace => ENoSpc,
        BlockError.Gone => EShutdown,
        _ => EIo,
    };

    public static string Name(uint errno) => errno switch
    {
        EPerm => "EPERM",
        EIo => "EIO",
        ENoMem => "ENOMEM",
        EInval => "EINVAL",
        ENoSpc => "ENOSPC",
        EOverflow => "EOVERFLOW",
        ENotSup => "ENOTSUP",
        EShutdown => "ESHUTDOWN",
        _ => errno.ToString(System.Globalization.CultureInfo.InvariantCulture),
    };
}
