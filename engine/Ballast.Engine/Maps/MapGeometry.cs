namespace Ballast.Engine.Maps;

/// <summary>
/// What a map needs to know about the pool: where segments begin, so that two data extents that
/// are physically adjacent but in different segments are never merged (the cleaner frees
/// segments one by one).
/// </summary>
public readonly record struct MapGeometry(long DataStartBlock, int SegmentBlockShift)
{
    public bool SameSegment(long physA, long physB) =>
        (physA - DataStartBlock) >> SegmentBlockShift == (physB - DataStartBlock) >> SegmentBlockShift;

    public static MapGeometry For(Log.PoolLayout layout) =>
        new(Log.PoolLayout.DataStart >> Log.PoolLayout.BlockShift, System.Numerics.BitOperations.Log2((uint)layout.BlocksPerSegment));
}

/// <summary>Told about data blocks that a map change stops referencing (for the cleaner's estimates).</summary>
public interface IDisplacedSink
{
    void Displaced(long phys, int count);
}
