using System.Buffers;
using Ballast.Engine.Volumes;

namespace Ballast.Iscsi.Scsi;

/// <summary>
/// COMPARE AND WRITE (SBC-3 §5.2): the Data-Out buffer holds N blocks to compare, then N blocks to
/// write. Compare and write run under the LU's exclusive range lock, which every plain write
/// respects, so no other write can slip between them.
/// </summary>
internal static class CompareAndWriteCommand
{
    public static ValueTask Execute(ScsiTask t)
    {
        var lu = t.Lu;
        var lba = t.U64(2);
        var blocks = t.Cdb[13];
        if ((t.Cdb[1] & 0xe0) != 0)
        {
            t.InvalidFieldInCdb();
            return default;
        }
        var max = Math.Min(255, (lu.MaxTransferLength >> lu.BlockShift) / 2);
        if (blocks > max)
        {
            t.InvalidFieldInCdb();
            return default;
        }
        if (!BlockRange.Check(t, lba, blocks))
        {
            return default;
        }
        if (blocks == 0)
        {
            // Nothing to compare; data sent anyway means the CDB and the transfer disagree.
            if (t.DataOutLength != 0)
            {
                t.InvalidFieldInCdb();
            }
            else
            {
                t.Good();
            }
            return default;
        }
        var bytes = blocks << lu.BlockShift;
        if (t.DataOutLength != 2 * bytes)
        {
            // The Data-Out buffer must hold exactly the verify and the write data.
            t.InvalidFieldInCdb();
            return default;
        }
        return RunAsync(t, (long)lba << lu.BlockShift, bytes, (t.Cdb[1] & 0x08) != 0 ? WriteFlags.Fua : WriteFlags.None);
    }

    private static async ValueTask RunAsync(ScsiTask t, long offset, int bytes, WriteFlags flags)
    {
        var lu = t.Lu;
        var token = await lu.WriteLock.AcquireAsync(offset, bytes, exclusive: true).ConfigureAwait(false);
        var medium = ArrayPool<byte>.Shared.Rent(bytes);
        try
        {
            await lu.Volume.ReadAsync(offset, medium.AsMemory(0, bytes)).ConfigureAwait(false);
            var mismatch = VerifyCommands.FirstMismatch(medium.AsSpan(0, bytes), t.Buffer.AsSpan(0, bytes), repeat: false);
            if (mismatch >= 0)
            {
                t.CheckCondition(SenseKey.Miscompare, Asc.MiscompareDuringVerifyOperation, (ulong)mismatch);
                return;
            }
            if (!lu.Mode.WriteCacheEnabled)
            {
                flags |= WriteFlags.Fua;
            }
            await lu.Volume.WriteAsync(offset, t.Buffer.AsMemory(bytes, bytes), flags).ConfigureAwait(false);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(medium);
            lu.WriteLock.Release(token);
        }
        t.Good();
    }
}
