namespace Ballast.Engine.Interop;

/// <summary>File-type checks .NET does not offer (it reports a socket file as a normal file).</summary>
public static class UnixFiles
{
    /// <summary>Makes the entries of <paramref name="directory"/> durable (after a rename into it).</summary>
    public static void SyncDirectory(string directory)
    {
        var fd = Libc.Open(directory, Libc.O_RDONLY | Libc.O_DIRECTORY | Libc.O_CLOEXEC, 0);
        if (fd < 0)
        {
            throw new IOException($"cannot open directory {directory}: {Libc.Describe(System.Runtime.InteropServices.Marshal.GetLastPInvokeError())}");
        }
        try
        {
            if (Libc.FSync(fd) != 0)
            {
                throw new IOException($"fsync of directory {directory} failed: {Libc.Describe(System.Runtime.InteropServices.Marshal.GetLastPInvokeError())}");
            }
        }
        finally
        {
            Libc.Close(fd);
        }
    }

    /// <summary>Sets the process umask (files and sockets created afterwards); returns the previous one.</summary>
    public static uint SetUmask(uint mask) => Libc.Umask(mask);

    /// <summary>True if <paramref name="path"/> names a Unix domain socket (not following a symlink).</summary>
    public static unsafe bool IsSocket(string path)
    {
        var buf = stackalloc byte[256];
        if (Libc.Statx(Libc.AT_FDCWD, path, Libc.AT_SYMLINK_NOFOLLOW, Libc.STATX_TYPE, buf) != 0)
        {
            return false;
        }
        var mode = *(ushort*)(buf + Libc.StatxModeOffset);
        return (mode & Libc.S_IFMT) == Libc.S_IFSOCK;
    }
}
