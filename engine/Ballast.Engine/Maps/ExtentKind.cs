namespace Ballast.Engine.Maps;

/// <summary>What a range of a volume holds.</summary>
public enum ExtentKind : byte
{
    /// <summary>Never written: reads as zeroes, no space used.</summary>
    Unmapped = 0,
    /// <summary>Data blocks in the log.</summary>
    Data = 1,
    /// <summary>Written as zeroes without deallocation (write-zeroes with NO_HOLE): reads as zeroes, no data stored.</summary>
    Zero = 2,
    /// <summary>Trimmed/unmapped: reads as zeroes, no data stored.</summary>
    Hole = 3,
}

/// <summary>A resolved piece of a volume range: what it is, where its data lies, and the LSN that last changed it.</summary>
public struct MapPiece
{
    public ExtentKind Kind;
    public int Count;
    /// <summary>Physical block of the first block (Data only).</summary>
    public long Phys;
    public long Lsn;
}
