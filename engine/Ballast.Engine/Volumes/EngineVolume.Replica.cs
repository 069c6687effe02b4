using System.Runtime.CompilerServices;
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
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    public async ValueTask ApplyReplicatedAsync(ReplicatedRecord rec, ReadOnlyMemory<byte> payload)
    {
        CheckReplicated(rec.Epoch, rec.Lba, rec.BlockCount, rec.Kind, payload);
        if (rec.Lsn <= Volatile.Read(ref _state.NextLsn))
        {
            return;
        }
        await SubmitReplicaAsync(rec.Kind, rec.Lba, rec.BlockCount, payload, rec.Fua ? RecordFlags.Fua : RecordFlags.None, explicitLsn: rec.Lsn, dataLsn: 0).ConfigureAwait(false);
    }

    /// <summary>
    /// Applies a resync copy: data (or zeroes, or a hole) as the primary held it at <paramref name="dataLsn"/>,
    /// written only where this replica holds something older.
    /// </summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    public async ValueTask ApplyResyncAsync(RecordKind kind, uint epoch, long lba, int blocks, ReadOnlyMemory<byte> payload, long dataLsn)
    {
        CheckReplicated(epoch, lba, blocks, kind, payload);
        await SubmitReplicaAsync(kind, lba, blocks, payload, RecordFlags.IfNewer, explicitLsn: 0, dataLsn: dataLsn).ConfigureAwait(false);
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

    private async ValueTask SubmitReplicaAsync(RecordKind kind, long lba, int blocks, ReadOnlyMemory<byte> payload, RecordFlags flags, long explicitLsn, long dataLsn)
    {
        var appender = _pool.Appender;
        var r = appender.Rent();
        r.Desc.Kind = kind;
        r.Desc.Lba = lba;
        r.Desc.BlockCount = blocks;
        r.Desc.Flags = flags;
        r.Desc.Aux = dataLsn;
        r.ExplicitLsn = explicitLsn;
        r.Volume = _state;
        r.UseReserve = kind != RecordKind.Data;
        if (kind == RecordKind.Data)
        {
            r.Payload = payload;
            var span = payload.Span;
            for (var i = 0; i < blocks; i++)
            {
                r.Crcs[i] = Crc32C.Compute(span.Slice(i << PoolLayout.BlockShift, PoolLayout.BlockSize));
            }
        }
        try
        {
            await appender.SubmitAsync(r).ConfigureAwait(false);
        }
        finally
        {
            appender.Return(r);
        }
    }

    /// <summary>The most blocks one replicated data record may carry.</summary>
    public int MaxReplicatedBlocks => MaxRecordBlocks;
}
