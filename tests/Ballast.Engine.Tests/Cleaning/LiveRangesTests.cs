using Ballast.Engine.Cleaning;
using Ballast.Engine.Log;

namespace Ballast.Engine.Tests.Cleaning;

public class LiveRangesTests
{
    // 4 MiB segments: 1024 blocks each, the first starting at block 256 (1 MiB).
    private static readonly PoolLayout Layout = new(4 << 20, 16);

    private static long Block(int segment, int offset) => 256L + 1024L * segment + offset;

    [Test]
    public void Merge_joins_overlapping_ranges_and_adjacent_ones_up_to_the_copy_size_and_counts_live_blocks()
    {
        var live = new LiveRanges(Layout);
        live.Track(3);
        live.Add(Block(3, 10), 5);   // [10,15)
        live.Add(Block(3, 12), 6);   // overlaps: [10,18)
        live.Add(Block(3, 18), 2);   // adjacent: [10,20)
        live.Add(Block(3, 100), 4);  // apart
        live.Add(Block(3, 101), 1);  // inside the previous one
        live.Add(Block(7, 0), 1);    // untracked segment: ignored
        var blocks = live.Merge();
        Assert.That(blocks, Is.EqualTo(new Dictionary<int, int> { [3] = 14 }));
        Assert.That(live.ComponentsOf(3).Select(c => (c.Phys, c.Count)), Is.EqualTo(new[] { (Block(3, 10), 10), (Block(3, 100), 4) }));
    }

    [Test]
    public void A_range_is_redirected_only_when_one_moved_copy_holds_all_of_it()
    {
        // Blocks 10 and 12 moved to 500 and 502 (copied back to back with 11's successor between):
        // a range 10-12 has both ends in copies one offset apart, but block 11 was not copied.
        var moved = new LiveRanges(Layout);
        moved.Track(3);
        moved.AddMoved(Block(3, 10), 1, Block(3, 500));
        moved.AddMoved(Block(3, 12), 3, Block(3, 502));
        moved.SortMoved();
        Assert.That(moved.RedirectRange(Block(3, 10), 1), Is.EqualTo(Block(3, 500)));
        Assert.That(moved.RedirectRange(Block(3, 13), 2), Is.EqualTo(Block(3, 503)));
        Assert.That(moved.RedirectRange(Block(3, 10), 3), Is.EqualTo(-1));
        Assert.That(moved.RedirectRange(Block(3, 12), 4), Is.EqualTo(-1), "runs past the copy");
        Assert.That(moved.RedirectRange(Block(3, 11), 1), Is.EqualTo(-1), "not copied");
        Assert.That(moved.RedirectRange(Block(4, 10), 1), Is.EqualTo(-1), "segment not tracked");
    }

    [Test]
    public void Merge_keeps_adjacent_ranges_apart_past_the_copy_size()
    {
        var live = new LiveRanges(Layout);
        live.Track(0);
        live.Add(Block(0, 0), LiveRanges.MaxAdjacentMerge - 1);
        live.Add(Block(0, LiveRanges.MaxAdjacentMerge - 1), 1);
        live.Add(Block(0, LiveRanges.MaxAdjacentMerge), 1);
        Assert.That(live.Merge()[0], Is.EqualTo(LiveRanges.MaxAdjacentMerge + 1));
        Assert.That(live.ComponentsOf(0).Select(c => c.Count), Is.EqualTo(new[] { LiveRanges.MaxAdjacentMerge, 1 }));
    }

    [Test]
    public void A_reset_forgets_every_segment_and_component_of_the_last_mark()
    {
        var live = new LiveRanges(Layout);
        live.Track(1);
        live.Track(2);
        live.Add(Block(1, 5), 3);
        live.Add(Block(2, 5), 3);
        live.Merge();
        live.Reset();
        Assert.That(live.Segments, Is.Empty);
        live.Track(2);
        live.Add(Block(2, 40), 2);
        Assert.That(live.Merge(), Is.EqualTo(new Dictionary<int, int> { [2] = 2 }));
        Assert.That(live.ComponentsOf(2).Select(c => (c.Phys, c.Count)), Is.EqualTo(new[] { (Block(2, 40), 2) }));
        Assert.That(live.Segments, Does.Not.Contain(1));
    }
}
