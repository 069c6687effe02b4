namespace Ballast.Engine.Volumes;

/// <summary>
/// The seam between frontends (NBD, iSCSI) and storage: a byte-addressed block device.
/// Semantics follow the NBD spec and SBC: a write acknowledged before a flush completes is
/// durable when the flush completes; a FUA write is durable when it completes; a read issued
/// after a write completed sees it. Requests need not be block-aligned. Errors are thrown as
/// <see cref="BlockVolumeException"/>.
/// </summary>
public interface IBlockVolume
{
    string Name { get; }

    /// <summary>Stable identity of the volume (survives restarts and renames); used for SCSI device identifiers.</summary>
    Guid Uid { get; }

    long Size { get; }

    /// <summary>512 or 4096: the block size advertised to clients.</summary>
    int LogicalBlockSize { get; }

    VolumeFeatures Features { get; }

    ValueTask ReadAsync(long offset, Memory<byte> destination, CancellationToken cancellationToken = default);

    /// <summary>A read whose caller's continuation is short and never blocks (see <see cref="WriteFlags.CompleteInline"/>).</summary>
    ValueTask ReadInlineAsync(long offset, Memory<byte> destination) => ReadAsync(offset, destination);

    ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> source, WriteFlags flags, CancellationToken cancellationToken = default);

    ValueTask FlushAsync(CancellationToken cancellationToken = default);

    /// <summary>A flush whose caller's continuation is short and never blocks: it may run on the thread that synced (see <see cref="WriteFlags.CompleteInline"/>).</summary>
    ValueTask FlushInlineAsync() => FlushAsync();

    /// <summary>Deallocates the range; it reads as zeroes afterwards.</summary>
    ValueTask TrimAsync(long offset, long length, CancellationToken cancellationToken = default);

    /// <summary>Makes the range read as zeroes; with <paramref name="mayDeallocate"/> it may also be deallocated. Never stores data blocks.</summary>
    ValueTask WriteZeroesAsync(long offset, long length, bool mayDeallocate, CancellationToken cancellationToken = default);

    /// <summary>
    /// Describes [offset, offset+length) as data / zero / hole ranges, in order, filling
    /// <paramref name="ranges"/>. Returns how many were written; they may stop short of the end
    /// when the span is full. Unaligned edges are widened to whole blocks.
    /// </summary>
    int GetAllocation(long offset, long length, Span<AllocationRange> ranges);
}

[Flags]
public enum VolumeFeatures
{
    None = 0,
    ReadOnly = 1,
    Trim = 2,
    WriteZeroes = 4,
    /// <summary>Writing zeroes never touches data blocks, so it is always fast.</summary>
    FastZero = 8,
    /// <summary>Several connections may use the volume at once and see one consistent state (flush covers all).</summary>
    MultiConnection = 16,
    /// <summary>Allocation status (block status / GET LBA STATUS) is meaningful.</summary>
    AllocationStatus = 32,
}

[Flags]
public enum WriteFlags
{
    None = 0,
    /// <summary>Force unit access: durable when the write completes.</summary>
    Fua = 1,
    /// <summary>
    /// The caller's continuation is short and never blocks (it queues a reply): it may run on the
    /// engine thread that finished the write instead of being posted to the thread pool, which
    /// saves a thread hand-off per I/O. Callers that go on to do real work must not set it.
    /// </summary>
    CompleteInline = 2,
    /// <summary>
    /// The caller has nothing else in flight (a connection at queue depth 1): if the log is idle,
    /// a small write may be written on the calling thread, saving the wake-up of the engine's
    /// writer. The call then blocks for one device write. Callers with more requests to start
    /// must not set it: they would start them only after the write, and lose the batching.
    /// </summary>
    Alone = 4,
}

public enum AllocationState : byte
{
    Data = 0,
    /// <summary>Allocated but reads as zeroes.</summary>
    Zero = 1,
    /// <summary>Not allocated; reads as zeroes.</summary>
    Hole = 2,
}

public readonly record struct AllocationRange(long Offset, long Length, AllocationState State);
