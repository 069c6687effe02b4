using Ballast.Engine.Log;

namespace Ballast.Engine.Tests.Log;

public class PoolLayoutTests
{
    [TestCase(1 << 20)]
    [TestCase(4 << 20)]
    [TestCase(64 << 20)]
    public void Block_addresses_map_to_their_segment_and_offset_at_every_segment_edge(int segmentSize)
    {
        var layout = new PoolLayout(segmentSize, 16);
        var blocks = layout.BlocksPerSegment;
        for (var seg = 0; seg < layout.SegmentCount; seg++)
        {
            var first = layout.BlockAddress(seg, 0);
            Assert.Multiple(() =>
            {
                Assert.That(layout.SegmentOf(first), Is.EqualTo(seg));
                Assert.That(layout.BlockInSegment(first), Is.Zero);
                Assert.That(layout.IsDataBlock(first), Is.False, "the header block");
                Assert.That(layout.SegmentOf(first + 1), Is.EqualTo(seg));
                Assert.That(layout.BlockInSegment(first + 1), Is.EqualTo(1));
                Assert.That(layout.IsDataBlock(first + 1), Is.True);
                Assert.That(layout.SegmentOf(first + blocks - 1), Is.EqualTo(seg));
                Assert.That(layout.BlockInSegment(first + blocks - 1), Is.EqualTo(blocks - 1));
                Assert.That(layout.IsDataBlock(first + blocks - 1), Is.False, "the summary");
                Assert.That(layout.IsDataBlock((layout.BatchLimit >> PoolLayout.BlockShift) - 1 + first), Is.True, "the last block a batch may use");
            });
        }
        Assert.That(layout.IsDataBlock(0), Is.False, "superblocks");
        Assert.That(layout.IsDataBlock(layout.DeviceLength >> PoolLayout.BlockShift), Is.False, "past the end");
        Assert.That(layout.IsDataBlock(-1), Is.False);
    }
}
