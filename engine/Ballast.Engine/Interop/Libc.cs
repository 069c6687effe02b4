using System.Runtime.InteropServices;

namespace Ballast.Engine.Interop;

/// <summary>The few Linux syscalls the engine needs that .NET does not expose (O_DIRECT, fdatasync, fallocate).</summary>
internal static partial class Libc
{
    public const int O_RDONLY = 0x0;
    public const int O_RDWR = 0x2;
    public const int O_CREAT = 0x40;
    public const int O_EXCL = 0x80;
    public const int O_CLOEXEC = 0x80000;
    public const int O_DIRECT = 0x4000;

    public const int FALLOC_FL_KEEP_SIZE = 0x01;
    public const int FALLOC_FL_PUNCH_HOLE = 0x02;
    /// <summary>Linux 6.17+: allocate written, zeroed blocks with the device's write-zeroes command.</summary>
    public const int FALLOC_FL_WRITE_ZEROES = 0x80;

    public const int SEEK_DATA = 3;
    public const int SEEK_HOLE = 4;

    public const int EIO = 5;
    public const int ENXIO = 6;
    public const int EINTR = 4;
    public const int EAGAIN = 11;
    public const int EBUSY = 16;
    public const int EINVAL = 22;
    public const int ENOSPC = 28;
    public const int EOPNOTSUPP = 95;

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Open(string path, int flags, int mode);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    public static partial int Close(int fd);

    [LibraryImport("libc", EntryPoint = "pread", SetLastError = true)]
    public static unsafe partial nint PRead(int fd, byte* buf, nuint count, long offset);

    [LibraryImport("libc", EntryPoint = "pwrite", SetLastError = true)]
    public static unsafe partial nint PWrite(int fd, byte* buf, nuint count, long offset);

    [LibraryImport("libc", EntryPoint = "pwritev", SetLastError = true)]
    public static unsafe partial nint PWriteV(int fd, IoVec* iov, int count, long offset);

    /// <summary>struct iovec.</summary>
    public unsafe struct IoVec
    {
        public void* Base;
        public nuint Length;
    }

    /// <summary>Most parts one pwritev takes (IOV_MAX on Linux).</summary>
    public const int IovMax = 1024;

    [LibraryImport("libc", EntryPoint = "fdatasync", SetLastError = true)]
    public static partial int FDataSync(int fd);

    [LibraryImport("libc", EntryPoint = "fallocate", SetLastError = true)]
    public static partial int FAllocate(int fd, int mode, long offset, long length);

    [LibraryImport("libc", EntryPoint = "lseek", SetLastError = true)]
    public static partial long LSeek(int fd, long offset, int whence);

    /// <summary>fstatfs(2) into a raw buffer: f_type, the filesystem's magic, is its first field (a long) on x86-64 and arm64.</summary>
    [LibraryImport("libc", EntryPoint = "fstatfs", SetLastError = true)]
    public static unsafe partial int FStatFs(int fd, byte* statfsBuffer);

    public const long EXT4_SUPER_MAGIC = 0xEF53;
    public const long XFS_SUPER_MAGIC = 0x58465342;

    [LibraryImport("libc", EntryPoint = "ftruncate", SetLastError = true)]
    public static partial int FTruncate(int fd, long length);

    [LibraryImport("libc", EntryPoint = "flock", SetLastError = true)]
    public static partial int FLock(int fd, int operation);

    /// <summary>statx(2): one struct layout on every architecture, unlike stat(2).</summary>
    [LibraryImport("libc", EntryPoint = "statx", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static unsafe partial int Statx(int dirfd, string path, int flags, uint mask, byte* statxBuffer);

    public const int AT_FDCWD = -100;
    public const int AT_SYMLINK_NOFOLLOW = 0x100;
    public const uint STATX_TYPE = 0x1;
    /// <summary>Offset of stx_mode (u16) in struct statx.</summary>
    public const int StatxModeOffset = 28;
    public const int S_IFMT = 0xF000;
    public const int S_IFSOCK = 0xC000;

    [LibraryImport("libc", EntryPoint = "fsync", SetLastError = true)]
    public static partial int FSync(int fd);

    public const int O_DIRECTORY = 0x10000;

    [LibraryImport("libc", EntryPoint = "umask")]
    public static partial uint Umask(uint mask);

    public const int LOCK_EX = 2;
    public const int LOCK_NB = 4;

    public static string Describe(int errno) => Marshal.GetPInvokeErrorMessage(errno);
}
