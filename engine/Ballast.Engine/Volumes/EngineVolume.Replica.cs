using System.Runtime.CompilerServices;
using Ballast.Engine.Async;
using Ballast.Engine.Log;
using Ballast.Engine.Replication;

namespace Ballast.Engine.Volumes;

/// <summary>
/// The engine's side of replication: the primary attaches a forwarder; a replica appends the
/// primary's records with the primary's LSNs, and resync copies that never overwrite newer data.
/// </summary>
public sealed partial class EngineVolume
{
    /// <summary>Makes this volume a replicated primary (records also go to <paramref name="forwarder"/>), or a plain one again (null).</summary>
    public void AttachForwarder(IRecordForwarder? forwarder) => _state.Forwarder = forwarder;

    public bool IsForwarding => _state.Forwarder != null;

    /// <summary>
    /// Appends a record received from the primary, with its LSN. Records from an older epoch are
    /// refused (a replaced primary must not write); a record at or below the LSN already held is
    /// a duplicate and is acknowledged without effect.
    /// </summary>
    [AsyncMethodBuilder(typeof(PooledValueTaskBuilder))]
    /// <param name="completeInline">The caller's continuation only queues the answer (see WriteFlags.CompleteInline).</param>
    public async ValueTask ApplyReplicatedAsync(ReplicatedRecord rec, ReadOnlyMemory<byte> payload, bool completeInline = false)
    {
        CheckReplicated(rec.Epoch, rec.Lba, rec.BlockCount, rec.Kind, payload);
        if (rec.Lsn <= Volatile.Read(ref _state.NextLsn))
        {
            return;
        }
        await SubmitReplicaAsync(rec.Kind, rec.Lba, rec.BlockCount, payload, rec.Fua ? RecordFlags.Fua : RecordFlags.None, explicitLsn: rec.Lsn, dataLsn: 0, completeInline).ConfigureAwait(false);
    }

    /// <summary>
    /// Applies a resync copy: data (or zeroes, or a hole) as the primary held it at <paramref name="dataLsn"/>,
    /// written only where this replica holds something older.
    /// </summary>
    [AsyncMethodBuilder(typeof(PooledValueTaskBuilder))]
    public async ValueTask ApplyResyncAsync(RecordKind kind, uint epoch, long lba, int blocks, ReadOnlyMemory<byte> payload, long dataLsn, bool force = false, bool completeInline = false)
    {
        CheckReplicated(epoch, lba, blocks, kind, payload);
        var flags = RecordFlags.IfNewer | (force ? RecordFlags.Force : RecordFlags.None);
        await SubmitReplicaAsync(kind, lba, blocks, payload, flags, explicitLsn: 0, dataLsn: dataLsn, completeInline).ConfigureAwait(false);
    }

    /// <summary>
    /// Changed extents after <paramref name="sinceLsn"/>, split wherever the LSN changes, so each
    /// piece's LSN is exactly that of its data (a resync copy must never claim a newer LSN than its data has).
    /// </summary>
    public IReadOnlyList<ChangedExtent> GetChangedPieces(long sinceLsn, long fromOffset = 0, int max = int.MaxValue)
    {
        var list = new List<ChangedExtent>();
        lock (_state.Lock)
        {
            var size = _state.Size;
            _state.Map.Visit(fromOffset >> PoolLayout.BlockShift, _state.Map.CapacityBlocks, sinceLsn, (in Maps.ExtentMap.MapPieceInfo p) =>
            {
                var from = p.Block << PoolLayout.BlockShift;
                var to = Math.Min(size, (p.Block + p.Count) << PoolLayout.BlockShift);
                if (from >= to || list.Count >= max)
                {
                    return;
                }
                var state = p.Kind switch
                {
                    Maps.ExtentKind.Data => AllocationState.Data,
                    Maps.ExtentKind.Zero => AllocationState.Zero,
                    _ => AllocationState.Hole,
                };
                if (list.Count > 0 && list[^1].State == state && list[^1].Lsn == p.Lsn && list[^1].Offset + list[^1].Length == from)
                {
                    list[^1] = list[^1] with { Length = to - list[^1].Offset };
                }
                else
                {
                    list.Add(new ChangedExtent(from, to - from, state, p.Lsn));
                }
            });
        }
        return list;
    }

    private void CheckReplicated(uint epoch, long lba, int blocks, RecordKind kind, ReadOnlyMemory<byte> payload)
    {
        if (_state.Deleted)
        {
            throw new BlockVolumeException(BlockError.Gone, $"volume {Name} was deleted");
        }
        if (epoch < _state.Epoch)
        {
            throw new BlockVolumeException(BlockError.Fenced, $"volume {Name}: a record from epoch {epoch} is refused; the volume is at epoch {_state.Epoch} (a newer primary took over)");
        }
        var capacity = (Size + PoolLayout.BlockSize - 1) >> PoolLayout.BlockShift;
        if (lba < 0 || blocks <= 0 || lba > capacity - blocks)
        {
            throw new BlockVolumeException(BlockError.OutOfRange, $"volume {Name}: replicated range {lba}+{blocks} blocks is outside the volume");
        }
        if (kind == RecordKind.Data ? payload.Length != (long)blocks << PoolLayout.BlockShift || blocks > MaxRecordBlocks : kind is not (RecordKind.Zero or RecordKind.Trim))
        {
            throw new BlockVolumeException(BlockError.InvalidArgument, $"volume {Name}: malformed replicated record ({kind}, {blocks} blocks, {payload.Length} bytes)");
        }
    }

    [AsyncMethodBuilder(typeof(PooledValueTaskBuilder))]
    private async ValueTask SubmitReplicaAsync(RecordKind kind, long lba, int blocks, ReadOnlyMemory<byte> payload, RecordFlags flags, long explicitLsn, long dataLsn, bool completeInline)
    {
        var appender = _pool.Appender;
        var r = RentRecord(kind, lba, blocks, payload, flags);
        r.CompleteInline = completeInline;
        // A replica's receive loop submits every record one read brought inside one completion
        // batch: the log is written once for all of them when that batch ends.
        r.DrainAtBatchEnd = explicitLsn > 0 && completeInline;
        r.Desc.Aux = dataLsn;
        r.ExplicitLsn = explicitLsn;
        try
        {
            await appender.SubmitAsync(r).ConfigureAwait(false);
        }
        finally
        {
            appender.Return(r);
        }
    }

    /// <summary>
    /// Every extent over [offset, offset+length) with its LSN (unmapped gaps as holes with LSN 0),
    /// for copying a range exactly as this volume holds it.
    /// </summary>
    public IReadOnlyList<ChangedExtent> GetPieces(long offset, long length)
    {
        var list = new List<ChangedExtent>();
        lock (_state.Lock)
        {
            var end = Math.Min(offset + length, _state.Size);
            var pos = offset;
            _state.Map.Visit(offset >> PoolLayout.BlockShift, (end + PoolLayout.BlockSize - 1) >> PoolLayout.BlockShift, -1, (in Maps.ExtentMap.MapPieceInfo p) =>
            {
                var from = Math.Max(offset, p.Block << PoolLayout.BlockShift);
                var to = Math.Min(end, (p.Block + p.Count) << PoolLayout.BlockShift);
                if (from > pos)
                {
                    list.Add(new ChangedExtent(pos, from - pos, AllocationState.Hole, 0));
                }
                if (to > from)
                {
                    var state = p.Kind switch
                    {
                        Maps.ExtentKind.Data => AllocationState.Data,
                        Maps.ExtentKind.Zero => AllocationState.Zero,
                        _ => AllocationState.Hole,
                    };
                    list.Add(new ChangedExtent(from, to - from, state, p.Lsn));
                    pos = to;
                }
            });
            if (pos < end)
            {
                list.Add(new ChangedExtent(pos, end - pos, AllocationState.Hole, 0));
            }
        }
        return list;
    }

    /// <summary>Lets the next LSN start no lower than <paramref name="next"/> (a new primary's epoch starts above every LSN an older primary used).</summary>
    public void RaiseNextLsn(long next)
    {
        _pool.Appender.RaiseNextLsn(_state, next - 1);
    }

    /// <summary>True once a newer primary took over: writes are refused here.</summary>
    public bool IsFenced => _state.Fenced;

    public void SetFenced(bool fenced) => _state.Fenced = fenced;

    /// <summary>Completes when every record submitted before has been applied to the map.</summary>
    public Task BarrierAsync() => _pool.Appender.RunAtBoundaryAsync(static () => { });

    /// <summary>The most blocks one replicated data record may carry.</summary>
    public int MaxReplicatedBlocks => MaxRecordBlocks;
}
