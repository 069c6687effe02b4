namespace Ballast.Engine.Storage;

/// <summary>
/// The byte-addressed device under a pool: a file or block device in production, a fault-injecting
/// in-memory image in tests. Offsets, lengths and buffers of Read/Write are multiples of 4096 and
/// buffers are 4096-aligned (O_DIRECT rules). Errors are thrown as <see cref="StorageException"/>.
/// Write and Sync are called by few threads (appender, maintenance); reads come from everywhere.
/// </summary>
public interface IPoolStorage : IDisposable
{
    /// <summary>Size in bytes that may be addressed.</summary>
    long Length { get; }

    /// <summary>Human-readable location, for logs.</summary>
    string Description { get; }

    /// <param name="completeInline">The caller's continuation may run on the thread that did the read (see WriteFlags.CompleteInline).</param>
    ValueTask ReadAsync(long offset, Memory<byte> buffer, bool completeInline = false);

    void Read(long offset, Span<byte> buffer);

    void Write(long offset, ReadOnlySpan<byte> buffer);

    /// <summary>
    /// Writes <paramref name="parts"/> back to back from <paramref name="offset"/>, as one write of
    /// their concatenation (each part follows the Read/Write rules). A file does it with one
    /// pwritev, so large payloads go to the device from the caller's buffers without a copy;
    /// this default copies them into one buffer.
    /// </summary>
    void WriteGather(long offset, ReadOnlySpan<ReadOnlyMemory<byte>> parts)
    {
        var total = 0;
        foreach (var part in parts)
        {
            total += part.Length;
        }
        using var joined = new Buffers.AlignedBuffer(total);
        var at = 0;
        foreach (var part in parts)
        {
            part.Span.CopyTo(joined.Span[at..]);
            at += part.Length;
        }
        Write(offset, joined.Span);
    }

    /// <summary>Makes every write that completed before this call durable (fdatasync).</summary>
    void Sync();

    /// <summary>Reserves backing space so later writes in the range cannot fail with ENOSPC.</summary>
    void Allocate(long offset, long length);

    /// <summary>
    /// Writes into never-written space cost a journal commit on the next sync here (ext4, xfs
    /// with O_DIRECT), so zeroing free space ahead of the log pays. Not for block devices,
    /// copy-on-write filesystems (nothing to convert) or the page cache (zeroes would wait dirty
    /// for the log's next sync).
    /// </summary>
    bool BenefitsFromPreparing { get; }

    /// <summary>
    /// Offset of the first byte in the range whose space was never written (a hole, or a
    /// fallocated extent the filesystem still marks unwritten), or -1 when all of it was.
    /// </summary>
    long FirstUnwritten(long offset, long length);

    /// <summary>
    /// Writes zeroes over the parts of the range that were never written, so later writes there
    /// need no extent conversion; returns the bytes zeroed. Only for space nothing else writes to.
    /// </summary>
    long ZeroUnwritten(long offset, long length);

    /// <summary>Gives the range's space back to the filesystem (punch hole). Contents become zero.</summary>
    void Discard(long offset, long length);

    /// <summary>Grows the addressable size.</summary>
    void Grow(long length);
}
