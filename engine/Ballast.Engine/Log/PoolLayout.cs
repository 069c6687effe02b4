namespace Ballast.Engine.Log;

/// <summary>
/// Geometry of a pool device: two superblock slots, then fixed-size segments. Every segment's
/// first block is its header and its last block is kept free for the seal record, so a segment
/// can always be closed. Physical addresses are absolute 4 KiB block numbers in the device.
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
    }

    public int SegmentSize { get; }
    public int SegmentCount { get; }
    public int BlocksPerSegment { get; }

    /// <summary>First byte a batch may use in a segment (after the header block).</summary>
    public int FirstBatchOffset => BlockSize;

    /// <summary>Batches end at or before this offset; the last block is reserved for the seal.</summary>
    public int BatchLimit => SegmentSize - BlockSize;

    public long DeviceLength => DataStart + (long)SegmentSize * SegmentCount;

    public long SegmentOffset(int segment) => DataStart + (long)segment * SegmentSize;

    public long BlockAddress(int segment, int offsetInSegment) => (SegmentOffset(segment) + offsetInSegment) >> BlockShift;

    public int SegmentOf(long physBlock) => (int)(((physBlock << BlockShift) - DataStart) / SegmentSize);

    public int BlockInSegment(long physBlock) => (int)(((physBlock << BlockShift) - DataStart) % SegmentSize >> BlockShift);

    public bool IsDataBlock(long physBlock)
    {
        var byteOffset = physBlock << BlockShift;
        if (physBlock < 0 || byteOffset < DataStart || byteOffset >= DeviceLength)
        {
            return false;
        }
        var inSeg = BlockInSegment(physBlock);
        return inSeg >= 1 && inSeg < BlocksPerSegment - 1;
    }
}
