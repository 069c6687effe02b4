using Ballast.Engine.Maps;

namespace Ballast.Engine.Tests.Maps;

[NonParallelizable] // The spare arrays are process-wide.
public class MapEntryArraysTests
{
    [Test]
    public void A_returned_array_is_rented_again_by_its_size_class()
    {
        var a = MapEntryArrays.Rent(600);
        Assert.That(a, Has.Length.EqualTo(1024), "sizes round up to a power of two");
        MapEntryArrays.Return(a);
        Assert.That(MapEntryArrays.Rent(1000), Is.SameAs(a));
    }

    [Test]
    public void Arrays_of_other_sizes_are_not_kept()
    {
        var odd = new MapEntry[600];
        var before = MapEntryArrays.SpareBytes;
        MapEntryArrays.Return(odd);
        Assert.That(MapEntryArrays.SpareBytes, Is.EqualTo(before));
        Assert.That(MapEntryArrays.Rent(600), Is.Not.SameAs(odd));
    }

    [Test]
    public void When_the_spares_are_full_small_ones_make_room_for_a_large_one()
    {
        // Fill the budget with small arrays, as leaves leave them behind while they grow.
        for (var i = 0; i < 1_000_000; i++)
        {
            var before = MapEntryArrays.SpareBytes;
            MapEntryArrays.Return(new MapEntry[16]);
            if (MapEntryArrays.SpareBytes == before)
            {
                break; // full: the array was left to the collector
            }
        }
        Assert.That(MapEntryArrays.SpareBytes, Is.GreaterThan(MapEntryArrays.MaxSpareBytes - 16 * 20));
        var large = new MapEntry[1024];
        MapEntryArrays.Return(large);
        Assert.That(MapEntryArrays.SpareBytes, Is.LessThanOrEqualTo(MapEntryArrays.MaxSpareBytes));
        Assert.That(MapEntryArrays.Rent(1024), Is.SameAs(large));
    }
}
