namespace Ballast.Engine.Log;

/// <summary>
/// Geometry of a pool device: two superblock slots, then fixed-size segments. Every segment's
/// first block is its header. Batches end by <see cref="BatchLimit"/>, which leaves room for the
/// seal record and the segment summary (the CRC of every block, 4 bytes per 4 KiB) that follow
/// the last batch, so a segment can always be closed. Physical addresses are absolute 4 KiB
/// block numbers in the device.
/// </summary>
public sealed class PoolLayout
{
    public const int BlockSize = 4096;
    public const int BlockShift = 12;
    public const long DataStart = 1L << 20;
    public const int MinSegmentSize = 1 << 20;
    public const int MaxSegmentSize = 1 << 30;

    public PoolLayout(int segmentSize, int segmentCount)
    {
        if (segmentSize < MinSegmentSize || segmentSize > MaxSegmentSize || (segmentSize & (segmentSize - 1)) != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(segmentSize), segmentSize, $"segment size must be a power of two between {MinSegmentSize} and {MaxSegmentSize} bytes");
        }
        if (segmentCount < 8)
        {
            throw new ArgumentOutOfRangeException(nameof(segmentCount), segmentCount, "a pool needs at least 8 segments");
        }
        SegmentSize = segmentSize;
        SegmentCount = segmentCount;
        BlocksPerSegment = segmentSize >> BlockShift;
        _segmentShift = System.Numerics.BitOperations.Log2((uint)segmentSize);
        SummaryBlocks = Math.Max(1, BlocksPerSegment * 4 / BlockSize);
    }

    // Segment sizes are powers of two: the map walks of the cleaner divide by one per entry.
    private readonly int _segmentShift;

    public int SegmentSize { get; }
    public int SegmentCount { get; }
    public int BlocksPerSegment { get; }

    /// <summary>Blocks of the segment summary: one CRC32C per block of the segment.</summary>
    public int SummaryBlocks { get; }

    /// <summary>Blocks a segment can hold payload in (at most; batch headers take some).</summary>
    public int DataBlocksPerSegment => (BatchLimit - FirstBatchOffset) >> BlockShift;

    /// <summary>First byte a batch may use in a segment (after the header block).</summary>
    public int FirstBatchOffset => BlockSize;

    /// <summary>Batches end at or before this offset; what follows is reserved for the seal and the summary.</summary>
    public int BatchLimit => SegmentSize - (1 + SummaryBlocks) * BlockSize;

    /// <summary>Bytes a seal plus summary take after the last batch.</summary>
    public int SealBytes => (1 + SummaryBlocks) * BlockSize;

    public long DeviceLength => DataStart + (long)SegmentSize * SegmentCount;

    public long SegmentOffset(int segment) => DataStart + (long)segment * SegmentSize;

    public long BlockAddress(int segment, int offsetInSegment) => (SegmentOffset(segment) + offsetInSegment) >> BlockShift;

    /// <summary>The segment a data block lies in (meaningless for blocks before DataStart: check with IsDataBlock).</summary>
    public int SegmentOf(long physBlock) => (int)(((physBlock << BlockShift) - DataStart) >> _segmentShift);

    public int BlockInSegment(long physBlock) => (int)((((physBlock << BlockShift) - DataStart) & (SegmentSize - 1)) >> BlockShift);

    public bool IsDataBlock(long physBlock)
    {
        var byteOffset = physBlock << BlockShift;
        if (physBlock < 0 || byteOffset < DataStart || byteOffset >= DeviceLength)
        {
            return false;
        }
        var inSeg = BlockInSegment(physBlock);
        return inSeg >= 1 && inSeg < BatchLimit >> BlockShift;
    }
}
