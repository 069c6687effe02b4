namespace Ballast.Engine.Maps;

/// <summary>
/// Collections for walking every leaf of the pool's maps, kept by the cleaner from one walk to
/// the next: it walks all maps at each mark and at each redirection, and fresh collections each
/// time would be garbage proportional to the maps. One walk at a time; cleared after each, so
/// no leaf is held past the walk (leaves are recycled once a freeze ends).
/// </summary>
internal sealed class MapWalkScratch
{
    public readonly HashSet<MapNode> Seen = new(ReferenceEqualityComparer.Instance);
    public readonly List<MapLeaf> Leaves = [];
    public readonly Stack<MapNode> Stack = new();

    /// <summary>Segments a walk looks for, by index: a test per entry that costs no hashing.</summary>
    public bool[] Segments = [];
    private readonly List<int> _marked = [];

    public void MarkSegment(int segment, int segmentCount)
    {
        if (Segments.Length < segmentCount)
        {
            Segments = new bool[segmentCount];
        }
        Segments[segment] = true;
        _marked.Add(segment);
    }

    public void Clear()
    {
        Seen.Clear();
        Leaves.Clear();
        Stack.Clear();
        foreach (var s in _marked)
        {
            Segments[s] = false;
        }
        _marked.Clear();
    }
}
