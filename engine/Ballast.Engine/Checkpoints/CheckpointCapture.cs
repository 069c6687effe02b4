using Ballast.Engine.Log;
using Ballast.Engine.Maps;
using Ballast.Engine.Volumes;

namespace Ballast.Engine.Checkpoints;

/// <summary>
/// Everything a checkpoint records, captured on the appender thread at a batch boundary: every
/// record before <see cref="Position"/> is in the captured maps and none after. Maps are frozen
/// copy-on-write until <see cref="Release"/>, so serialisation runs while writes go on.
/// </summary>
internal sealed class CheckpointCapture
{
    public required LogPosition Position { get; init; }
    public required ulong LastSeq { get; init; }
    public required uint NextVolumeId { get; init; }
    public required List<CapturedVolume> Volumes { get; init; }
    public required SegmentState[] States { get; init; }
    public required ulong[] Seqs { get; init; }
    public required int[] WriteOffsets { get; init; }
    public required int[] WrittenBlocks { get; init; }
    public required bool[] Sealed { get; init; }
    public required uint[] SummaryCrcs { get; init; }
    public required bool[] Recycled { get; init; }

    /// <summary>Lets the volumes' maps change their nodes in place again.</summary>
    public void Release()
    {
        foreach (var v in Volumes)
        {
            lock (v.State.Lock)
            {
                v.State.Map.EndCheckpoint();
            }
        }
    }

    public static CheckpointCapture Take(LogPosition position, ulong lastSeq, uint nextVolumeId, IEnumerable<VolumeState> volumes, SegmentTable segments)
    {
        var list = new List<CapturedVolume>();
        foreach (var v in volumes)
        {
            if (v.Deleted)
            {
                continue;
            }
            lock (v.Lock)
            {
                var root = v.Map.BeginCheckpoint(out var levels);
                list.Add(new CapturedVolume(v, v.CurrentMeta(), v.AppliedLsn, root, levels));
            }
        }
        var n = segments.Count;
        var capture = new CheckpointCapture
        {
            Position = position,
            LastSeq = lastSeq,
            NextVolumeId = nextVolumeId,
            Volumes = list,
            States = new SegmentState[n],
            Seqs = new ulong[n],
            WriteOffsets = new int[n],
            WrittenBlocks = new int[n],
            Sealed = new bool[n],
            SummaryCrcs = new uint[n],
            Recycled = new bool[n],
        };
        for (var i = 0; i < n; i++)
        {
            var e = segments[i];
            // Old checkpoint segments and cleaned segments are free as far as this checkpoint is concerned:
            // no captured map references them, and they are released once it is durable.
            capture.States[i] = e.State == SegmentState.Log ? SegmentState.Log : SegmentState.Free;
            capture.Seqs[i] = e.Seq;
            capture.WriteOffsets[i] = e.WriteOffset;
            capture.WrittenBlocks[i] = e.WrittenBlocks;
            capture.Sealed[i] = e.Sealed;
            capture.SummaryCrcs[i] = e.SummaryCrc;
            capture.Recycled[i] = e.Recycled;
        }
        return capture;
    }
}

internal sealed record CapturedVolume(VolumeState State, VolumeMeta Meta, long AppliedLsn, MapNode? Root, int Levels);
