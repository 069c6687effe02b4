using Ballast.Engine.Log;
using Ballast.Engine.Maps;

namespace Ballast.Engine.Tests.Maps;

public class ExtentMapTests
{
    // 1 MiB segments: 256 blocks each, data starting at block 256.
    private static readonly MapGeometry Geo = MapGeometry.For(new PoolLayout(1 << 20, 64));
    private const long Seg0 = 257; // first data block of segment 0

    private static List<MapPiece> Resolve(ExtentMap m, long start, int count)
    {
        var pieces = new MapPiece[count + 1];
        var n = m.Resolve(start, count, pieces, out var covered);
        Assert.That(covered, Is.EqualTo(count));
        return [.. pieces.Take(n)];
    }

    [Test]
    public void Sequential_writes_coalesce_into_one_extent_per_window()
    {
        var m = new ExtentMap(Geo, 4096);
        for (var i = 0; i < 200; i++)
        {
            m.Set(i, 1, ExtentKind.Data, Seg0 + i, i + 1);
        }
        Assert.That(m.CountEntries(), Is.EqualTo(1));
        var p = Resolve(m, 0, 200);
        Assert.That(p, Has.Count.EqualTo(1));
        Assert.That((p[0].Kind, p[0].Phys, p[0].Count, p[0].Lsn), Is.EqualTo((ExtentKind.Data, Seg0, 200, 200L)));
    }

    [Test]
    public void Physically_adjacent_data_in_different_segments_does_not_merge()
    {
        var m = new ExtentMap(Geo, 4096);
        m.Set(0, 1, ExtentKind.Data, 256 + 255, 1); // last block of segment 0's range
        m.Set(1, 1, ExtentKind.Data, 256 + 256, 2); // first block of segment 1
        Assert.That(m.CountEntries(), Is.EqualTo(2));
    }

    [Test]
    public void Overwriting_the_middle_splits_an_extent_in_three()
    {
        var m = new ExtentMap(Geo, 4096);
        m.Set(0, 10, ExtentKind.Data, Seg0, 1);
        m.Set(4, 2, ExtentKind.Data, Seg0 + 100, 2);
        var p = Resolve(m, 0, 10);
        Assert.That(p.Select(x => (x.Phys, x.Count)), Is.EqualTo(new[] { (Seg0, 4), (Seg0 + 100, 2), (Seg0 + 6, 4) }));
    }

    [Test]
    public void Trim_of_never_written_space_stores_nothing_but_trim_of_data_leaves_a_hole()
    {
        var m = new ExtentMap(Geo, 1 << 20);
        m.Set(5000, 100, ExtentKind.Hole, 0, 1);
        Assert.That(m.CountEntries(), Is.Zero);
        m.Set(0, 8, ExtentKind.Data, Seg0, 2);
        m.Set(2, 4, ExtentKind.Hole, 0, 3);
        var p = Resolve(m, 0, 10);
        Assert.That(p.Select(x => (x.Kind, x.Count)), Is.EqualTo(new[] { (ExtentKind.Data, 2), (ExtentKind.Hole, 4), (ExtentKind.Data, 2), (ExtentKind.Unmapped, 2) }));
    }

    [Test]
    public void Extents_spanning_windows_are_split_and_resolve_merges_them_back()
    {
        var m = new ExtentMap(Geo, 1 << 20);
        m.Set(1000, 100, ExtentKind.Data, Seg0, 1);
        Assert.That(m.CountEntries(), Is.EqualTo(2));
        var p = Resolve(m, 1000, 100);
        Assert.That(p, Has.Count.EqualTo(1));
        Assert.That(p[0].Count, Is.EqualTo(100));
    }

    [Test]
    public void A_snapshot_keeps_its_view_while_the_volume_changes()
    {
        var m = new ExtentMap(Geo, 1 << 20);
        m.Set(0, 4, ExtentKind.Data, Seg0, 1);
        var snap = m.FreezeSnapshot();
        m.Set(1, 1, ExtentKind.Data, Seg0 + 50, 2);
        m.Set(3, 1, ExtentKind.Hole, 0, 3);
        Assert.That(Resolve(snap, 0, 4).Select(x => (x.Kind, x.Phys, x.Count)), Is.EqualTo(new[] { (ExtentKind.Data, Seg0, 4) }));
        Assert.That(Resolve(m, 0, 4).Select(x => (x.Phys, x.Count)), Is.EqualTo(new[] { (Seg0, 1), (Seg0 + 50, 1), (Seg0 + 2, 1), (0L, 1) }));
        Assert.Throws<InvalidOperationException>(() => snap.Set(0, 1, ExtentKind.Hole, 0, 9));
    }

    [Test]
    public void A_clone_diverges_from_its_snapshot_and_from_the_origin()
    {
        var m = new ExtentMap(Geo, 1 << 20);
        m.Set(0, 4, ExtentKind.Data, Seg0, 1);
        var snap = m.FreezeSnapshot();
        var clone = snap.CreateClone();
        clone.Set(0, 1, ExtentKind.Zero, 0, 2);
        m.Set(2, 1, ExtentKind.Data, Seg0 + 9, 2);
        Assert.That(Resolve(clone, 0, 4).Select(x => x.Kind), Is.EqualTo(new[] { ExtentKind.Zero, ExtentKind.Data }));
        Assert.That(Resolve(snap, 0, 4), Has.Count.EqualTo(1));
        Assert.That(Resolve(m, 0, 4), Has.Count.EqualTo(3));
    }

    [Test]
    public void Changed_since_visits_only_newer_extents()
    {
        var m = new ExtentMap(Geo, 1 << 24);
        for (var i = 0; i < 100; i++)
        {
            m.Set(i * 5000, 1, ExtentKind.Data, Seg0 + i, i + 1);
        }
        var changed = new List<long>();
        m.Visit(0, m.CapacityBlocks, 90, (in ExtentMap.MapPieceInfo p) => changed.Add(p.Block));
        Assert.That(changed, Is.EqualTo(Enumerable.Range(90, 10).Select(i => (long)i * 5000)));
    }

    [Test]
    public void Map_uses_at_most_48_bytes_per_extent()
    {
        const int n = 200_000;
        var before = GC.GetTotalMemory(true);
        var m = new ExtentMap(Geo, 1 << 24);
        var rng = new Random(1);
        // Every other block, random order: nothing can coalesce.
        var blocks = Enumerable.Range(0, n).Select(i => (long)i * 2).OrderBy(_ => rng.Next()).ToArray();
        var lsn = 0;
        foreach (var b in blocks)
        {
            m.Set(b, 1, ExtentKind.Data, Seg0 + (lsn % 200), ++lsn);
        }
        var after = GC.GetTotalMemory(true);
        Assert.That(m.CountEntries(), Is.EqualTo(n));
        var perExtent = (double)(after - before) / n;
        TestContext.Out.WriteLine($"extent map: {perExtent:F1} bytes per extent ({n} extents)");
        Assert.That(perExtent, Is.LessThanOrEqualTo(48));
        GC.KeepAlive(m);
    }

    private static List<MapLeaf> Leaves(MapNode? root)
    {
        var leaves = new List<MapLeaf>();
        ExtentMap.CollectLeaves(root, new HashSet<MapNode>(ReferenceEqualityComparer.Instance), leaves);
        return leaves;
    }

    [Test]
    public void A_leaf_copied_for_a_checkpoint_gives_its_array_back_when_the_checkpoint_ends()
    {
        var m = new ExtentMap(Geo, 1 << 20);
        m.Set(0, 4, ExtentKind.Data, Seg0, 1);
        var frozen = m.BeginCheckpoint(out _);
        m.Set(1, 1, ExtentKind.Data, Seg0 + 50, 2);
        var old = Leaves(frozen).Single();
        Assert.That(old.Count, Is.EqualTo(1), "the checkpoint still reads the leaf as it was");
        m.EndCheckpoint();
        Assert.That(old.Items, Is.Empty, "its array went back to the spares");
        Assert.That(Resolve(m, 0, 4).Select(x => (x.Phys, x.Count)), Is.EqualTo(new[] { (Seg0, 1), (Seg0 + 50, 1), (Seg0 + 2, 2) }));
    }

    [Test]
    public void A_leaf_a_snapshot_shares_keeps_its_array_after_a_checkpoint()
    {
        var m = new ExtentMap(Geo, 1 << 20);
        m.Set(0, 4, ExtentKind.Data, Seg0, 1);
        var snap = m.FreezeSnapshot();
        var frozen = m.BeginCheckpoint(out _);
        m.Set(1, 1, ExtentKind.Data, Seg0 + 50, 2);
        m.EndCheckpoint();
        Assert.That(Leaves(frozen).Single().Items, Is.Not.Empty);
        for (var i = 0; i < 50; i++)
        {
            // Churn the spare arrays: a shared leaf's array must never be handed out again.
            var f = m.BeginCheckpoint(out _);
            m.Set(i % 4, 1, ExtentKind.Data, Seg0 + 60 + i, 3 + i);
            m.EndCheckpoint();
            GC.KeepAlive(f);
        }
        Assert.That(Resolve(snap, 0, 4).Select(x => (x.Kind, x.Phys, x.Count)), Is.EqualTo(new[] { (ExtentKind.Data, Seg0, 4) }));
    }

    [Test]
    public void Random_operations_match_a_plain_array([Range(1, 20)] int seed)
    {
        const int blocks = 5000;
        var rng = new Random(seed);
        var m = new ExtentMap(Geo, blocks);
        var kind = new ExtentKind[blocks];
        var phys = new long[blocks];
        var snaps = new List<(ExtentMap Map, ExtentKind[] Kind, long[] Phys)>();
        (ExtentMap Map, ExtentKind[] Kind, long[] Phys)? checkpoint = null;
        long next = Seg0;
        for (var op = 0; op < 400; op++)
        {
            var start = rng.Next(blocks);
            var count = 1 + rng.Next(Math.Min(300, blocks - start));
            var k = (ExtentKind)rng.Next(1, 4);
            if (rng.Next(20) == 0)
            {
                snaps.Add((m.FreezeSnapshot(), (ExtentKind[])kind.Clone(), (long[])phys.Clone()));
            }
            if (checkpoint == null && rng.Next(15) == 0)
            {
                // A checkpoint reads the map as it was while writes go on; when it ends, the
                // leaves copied for it are recycled, which must not disturb any other view.
                var root = m.BeginCheckpoint(out var levels);
                checkpoint = (ExtentMap.FromCheckpoint(Geo, root, levels, readOnly: true), (ExtentKind[])kind.Clone(), (long[])phys.Clone());
            }
            else if (checkpoint is var (frozen, ck, cp) && rng.Next(8) == 0)
            {
                Check(frozen, ck, cp, "checkpoint");
                m.EndCheckpoint();
                checkpoint = null;
            }
            if (next + count >= 256 + 64 * 256)
            {
                next = Seg0;
            }
            m.Set(start, count, k, next, op + 1);
            for (var i = 0; i < count; i++)
            {
                if (k == ExtentKind.Hole && kind[start + i] == ExtentKind.Unmapped)
                {
                    continue; // trim of unmapped space stays unmapped
                }
                kind[start + i] = k;
                phys[start + i] = k == ExtentKind.Data ? next + i : 0;
            }
            if (k == ExtentKind.Data)
            {
                next += count;
            }
        }
        Check(m, kind, phys, "volume");
        foreach (var (map, k, p) in snaps)
        {
            Check(map, k, p, "snapshot");
        }
    }

    private static void Check(ExtentMap m, ExtentKind[] kind, long[] phys, string what)
    {
        var pieces = new MapPiece[16];
        long block = 0;
        while (block < kind.Length)
        {
            var n = m.Resolve(block, (int)(kind.Length - block), pieces, out var covered);
            Assert.That(covered, Is.GreaterThan(0));
            var b = block;
            for (var i = 0; i < n; i++)
            {
                for (var j = 0; j < pieces[i].Count; j++, b++)
                {
                    // A hole and never-written space are the same to a reader; the map may record either.
                    var expectKind = kind[b] == ExtentKind.Unmapped ? ExtentKind.Hole : kind[b];
                    var actual = pieces[i].Kind == ExtentKind.Unmapped ? ExtentKind.Hole : pieces[i].Kind;
                    Assert.That(actual, Is.EqualTo(expectKind), $"{what} block {b}");
                    if (expectKind == ExtentKind.Data)
                    {
                        Assert.That(pieces[i].Phys + j, Is.EqualTo(phys[b]), $"{what} block {b}");
                    }
                }
            }
            block += covered;
        }
    }
}
