using Ballast.Engine.Interop;

namespace Ballast.Engine.Storage;

/// <summary>An I/O error from the device under the pool, with the errno that caused it.</summary>
public sealed class StorageException : IOException
{
    public StorageException(string operation, int errno, long offset = -1)
        : base($"{operation} failed: {Libc.Describe(errno)} (errno {errno}){(offset >= 0 ? $" at offset {offset}" : "")}")
    {
        Errno = errno;
        Offset = offset;
    }

    public int Errno { get; }
    public long Offset { get; }
    public bool IsNoSpace => Errno == Libc.ENOSPC;
}
