using System.Runtime.InteropServices;

namespace Ballast.Engine.Interop;

/// <summary>
/// The io_uring system calls and the kernel's ring layout (include/uapi/linux/io_uring.h), x86-64.
/// libc has no wrappers, so the calls go through syscall(2).
/// </summary>
internal static unsafe partial class IoUring
{
    private const long SysSetup = 425;
    private const long SysEnter = 426;

    public const byte OpNop = 0;
    public const byte OpRead = 22;
    public const uint EnterGetEvents = 1;
    public const uint FeatSingleMmap = 1;

    public const long OffSqRing = 0;
    public const long OffCqRing = 0x8000000;
    public const long OffSqes = 0x10000000;

    public const int SqeSize = 64;
    public const int CqeSize = 16;

    // struct io_uring_params: 120 bytes; the sq_off and cq_off blocks start at 40 and 80.
    public const int ParamsSize = 120;
    public const int PSqEntries = 0, PCqEntries = 4, PFeatures = 20;
    public const int SqHead = 40, SqTail = 44, SqRingMask = 48, SqArray = 64;
    public const int CqHead = 80, CqTail = 84, CqRingMask = 88, CqCqes = 100;

    // struct io_uring_sqe field offsets.
    public const int SqeOpcode = 0, SqeFd = 4, SqeOff = 8, SqeAddr = 16, SqeLen = 24, SqeUserData = 32;

    // struct io_uring_cqe field offsets.
    public const int CqeUserData = 0, CqeRes = 8;

    public const int ProtRead = 1, ProtWrite = 2;
    public const int MapShared = 0x01, MapPopulate = 0x8000;

    [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true)]
    private static partial long Syscall2(long number, long a1, long a2);

    [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true)]
    private static partial long Syscall6(long number, long a1, long a2, long a3, long a4, long a5, long a6);

    [LibraryImport("libc", EntryPoint = "mmap", SetLastError = true)]
    public static partial nint Mmap(nint addr, nuint length, int prot, int flags, int fd, long offset);

    [LibraryImport("libc", EntryPoint = "munmap", SetLastError = true)]
    public static partial int Munmap(nint addr, nuint length);

    public static int Setup(uint entries, byte* parameters) => (int)Syscall2(SysSetup, entries, (long)parameters);

    public static int Enter(int fd, uint toSubmit, uint minComplete, uint flags) => (int)Syscall6(SysEnter, fd, toSubmit, minComplete, flags, 0, 0);
}
