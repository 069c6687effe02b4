using Ballast.Engine.Log;
using Ballast.Engine.Maps;
using Ballast.Engine.Volumes;

namespace Ballast.Engine.Recovery;

/// <summary>
/// Applies replayed records to the catalog and maps, with the same catalog methods the live
/// path uses. Records already in the checkpoint (LSN at or below the volume's checkpoint LSN)
/// and records copied by the cleaner are skipped.
/// </summary>
internal sealed class ReplayApplier(VolumeCatalog catalog, SegmentTable segments, Action<PoolLogLevel, string>? log)
{
    // Relocations of the cleaning pass in progress: (old physical block, count, new physical block).
    private readonly List<(long Old, int Count, long New)> _moves = [];

    public void Apply(in RecordDescriptor d, ReadOnlySpan<byte> inline, long phys, ReadOnlySpan<uint> crcs)
    {
        switch (d.Kind)
        {
            case RecordKind.Data:
            case RecordKind.Zero:
            case RecordKind.Trim:
                ApplyRange(d, phys);
                break;
            case RecordKind.VolumeCreate:
                var meta = VolumeMeta.Decode(inline, out _);
                catalog.ApplyCreate(meta);
                break;
            // Metadata records carry the volume's last LSN rather than one of their own: every one
            // in the replayed tail is newer than the checkpoint, so all are applied.
            case RecordKind.SnapshotCreate:
                if (catalog.TryGet(d.VolumeId, out var source))
                {
                    catalog.ApplySnapshot(source, VolumeMeta.Decode(inline, out _), d.Lsn);
                    Advance(source, d.Lsn);
                }
                break;
            case RecordKind.VolumeResize:
                if (catalog.TryGet(d.VolumeId, out var resized) && d.Aux >= 0)
                {
                    VolumeCatalog.ApplyResize(resized, d.Aux, d.Lsn);
                    Advance(resized, d.Lsn);
                }
                break;
            case RecordKind.EpochSet:
                if (catalog.TryGet(d.VolumeId, out var fenced))
                {
                    VolumeCatalog.ApplyEpoch(fenced, (uint)d.Aux, d.Lsn);
                    Advance(fenced, d.Lsn);
                }
                break;
            case RecordKind.VolumeDelete:
                catalog.ApplyDelete(d.VolumeId);
                break;
            case RecordKind.CleanCommit:
                CommitMoves(Cleaning.Redirector.DecodeVictims(inline, segments.Count), free: true);
                break;
            case RecordKind.MoveCommit:
                if (Cleaning.Redirector.DecodeMoves(inline, segments.Count, out var start, out var end, out var moved))
                {
                    CommitMoves(moved, free: false, (start, end));
                }
                else
                {
                    // Its copies stay unused, as the live pool's would have had it no commit.
                    log?.Invoke(PoolLogLevel.Warning, "replay: a defragmentation commit with a damaged range; its copies are left unused");
                    _moves.Clear();
                }
                break;
            default:
                log?.Invoke(PoolLogLevel.Warning, $"replay: skipped a record of unknown kind {(int)d.Kind}");
                break;
        }
    }

    /// <summary>Relocation records replayed since the last commit: at the end of replay, those of a pass a crash interrupted.</summary>
    public int UncommittedMoves => _moves.Count;

    /// <summary>Redoes a cleaning pass (redirect entries into its victims, then free them) or a defragmentation step (redirect only).</summary>
    private void CommitMoves(List<int> victims, bool free, (long Start, long End)? blocks = null)
    {
        var moved = new Cleaning.LiveRanges(segments.Layout);
        foreach (var v in victims)
        {
            moved.Track(v);
        }
        foreach (var (old, count, fresh) in _moves)
        {
            moved.AddMoved(old, count, fresh);
        }
        moved.SortMoved();
        var keep = Cleaning.Redirector.Apply(catalog.All(), moved, segments.Layout, blocks: blocks, displaced: free ? null : segments);
        foreach (var v in free ? victims : [])
        {
            if (keep.Contains(v))
            {
                log?.Invoke(PoolLogLevel.Error, $"replay: segment {v} is still referenced after its cleaning pass; keeping it");
                continue;
            }
            segments.Release(v);
        }
        _moves.Clear();
    }

    private void ApplyRange(in RecordDescriptor d, long phys)
    {
        if ((d.Flags & RecordFlags.Relocated) != 0)
        {
            if (d.Kind == RecordKind.Data)
            {
                _moves.Add((d.Aux, d.BlockCount, phys));
            }
            return;
        }
        if ((d.Flags & RecordFlags.IfNewer) != 0)
        {
            // Idempotent and order-free: replayed whenever it lies in the replayed tail.
            if (catalog.TryGet(d.VolumeId, out var rv) && d.Lba >= 0 && d.BlockCount >= 0 && d.Lba + d.BlockCount <= rv.Map.CapacityBlocks)
            {
                var kind = d.Kind switch { RecordKind.Data => ExtentKind.Data, RecordKind.Zero => ExtentKind.Zero, _ => ExtentKind.Hole };
                lock (rv.Lock)
                {
                    if ((d.Flags & RecordFlags.Force) != 0)
                    {
                        rv.Map.Set(d.Lba, d.BlockCount, kind, kind == ExtentKind.Data ? phys : 0, d.Aux, segments);
                    }
                    else
                    {
                        rv.Map.SetIfNewer(d.Lba, d.BlockCount, kind, phys, d.Aux, segments);
                    }
                }
            }
            return;
        }
        if (!Current(d, out var v))
        {
            return;
        }
        lock (v.Lock)
        {
            if (d.Lba < 0 || d.BlockCount < 0 || d.Lba + d.BlockCount > v.Map.CapacityBlocks)
            {
                log?.Invoke(PoolLogLevel.Warning, $"replay: record for {v.Name} at block {d.Lba}+{d.BlockCount} lies outside the volume; skipped");
                return;
            }
            var kind = d.Kind switch
            {
                RecordKind.Data => ExtentKind.Data,
                RecordKind.Zero => ExtentKind.Zero,
                _ => ExtentKind.Hole,
            };
            v.Map.Set(d.Lba, d.BlockCount, kind, phys, d.Lsn, segments);
        }
        Advance(v, d.Lsn);
    }

    /// <summary>The record's volume, if it exists and the record is newer than the checkpoint's view of it.</summary>
    private bool Current(in RecordDescriptor d, out VolumeState v) =>
        catalog.TryGet(d.VolumeId, out v) && d.Lsn > v.CheckpointLsn;

    private static void Advance(VolumeState v, long lsn)
    {
        v.AppliedLsn = Math.Max(v.AppliedLsn, lsn);
        v.NextLsn = Math.Max(v.NextLsn, lsn);
    }
}
