namespace Ballast.Engine.Volumes;

/// <summary>
/// What a volume's map holds: bytes of data in the pool (blocks it shares with its snapshots or
/// its clone's parent count here too), how many runs of blocks that lie together on the device
/// they form (many small runs: a volume written at random, slow to read in order), and bytes
/// written as zeroes, which take no data space.
/// </summary>
public sealed record VolumeUsage(long DataBytes, long DataRuns, long ZeroBytes);
