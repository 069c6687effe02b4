using System.Runtime.CompilerServices;
using Ballast.Engine.Volumes;

namespace Ballast.Iscsi.Scsi;

/// <summary>
/// READ(6/10/12/16), WRITE(6/10/12/16), WRITE AND VERIFY(10/12/16) and ORWRITE(16) (SBC-3 §5).
/// The hot path: data goes straight between the task's pooled buffer and the volume, and the
/// volume's ValueTask is handed back as is (see <see cref="ScsiTask.HeldRangeLock"/>), so a
/// command allocates nothing.
/// </summary>
internal static class ReadWriteCommands
{
    private const byte ProtectMask = 0xe0; // RDPROTECT / WRPROTECT / VRPROTECT
    private const byte Fua = 0x08;

    public static ValueTask Read(ScsiTask t)
    {
        BlockRange.Decode(t, out var lba, out var blocks);
        if (t.Cdb[0] != ScsiOpcodes.Read6 && (t.Cdb[1] & ProtectMask) != 0)
        {
            // No protection information on Ballast volumes (SBC-3 §5.8, Table 33).
            t.InvalidFieldInCdb();
            return default;
        }
        if (!BlockRange.Check(t, lba, blocks) || !BlockRange.CheckTransfer(t, blocks))
        {
            return default;
        }
        if (blocks == 0)
        {
            t.Good();
            return default;
        }
        return ReadAsync(t, lba, (int)blocks);
    }

    /// <summary>Hands back the volume's own ValueTask; the task finishes the command when it completes (no state machine of ours).</summary>
    private static ValueTask ReadAsync(ScsiTask t, ulong lba, int blocks)
    {
        var lu = t.Lu;
        var bytes = blocks << lu.BlockShift;
        t.EnsureBuffer(bytes);
        // The task's completion only queues the response: it may run on the engine's I/O thread.
        var read = lu.Volume.ReadInlineAsync((long)lba << lu.BlockShift, t.Buffer.AsMemory(0, bytes));
        t.DataInOnSuccess = bytes;
        t.GoodOnSuccess = true;
        return read;
    }

    public static ValueTask Write(ScsiTask t)
    {
        BlockRange.Decode(t, out var lba, out var blocks);
        if (t.Cdb[0] != ScsiOpcodes.Write6 && (t.Cdb[1] & ProtectMask) != 0)
        {
            t.InvalidFieldInCdb();
            return default;
        }
        if (t.Cdb[0] is ScsiOpcodes.WriteAndVerify10 or ScsiOpcodes.WriteAndVerify12 or ScsiOpcodes.WriteAndVerify16 && (t.Cdb[1] & 0x06) == 0x04)
        {
            t.InvalidFieldInCdb(); // BYTCHK 10b is reserved
            return default;
        }
        if (!BeginWrite(t, lba, blocks, out var bytes))
        {
            return default;
        }
        var fua = (t.Cdb[0] != ScsiOpcodes.Write6 && (t.Cdb[1] & Fua) != 0)
            || t.Cdb[0] is ScsiOpcodes.WriteAndVerify10 or ScsiOpcodes.WriteAndVerify12 or ScsiOpcodes.WriteAndVerify16
            || !t.Lu.Mode.WriteCacheEnabled;
        return WriteAsync(t, lba, bytes, fua ? WriteFlags.Fua : WriteFlags.None);
    }

    /// <summary>
    /// Checks the range and transfer length and sets the expected transfer; false when the command
    /// is already answered (an error, or GOOD for nothing to write). <paramref name="bytes"/> is
    /// what to write.
    /// </summary>
    private static bool BeginWrite(ScsiTask t, ulong lba, uint blocks, out int bytes)
    {
        bytes = 0;
        if (!BlockRange.Check(t, lba, blocks) || !BlockRange.CheckTransfer(t, blocks))
        {
            return false;
        }
        if (blocks == 0)
        {
            t.Good();
            return false;
        }
        bytes = (int)blocks << t.Lu.BlockShift;
        t.TransferLength = bytes;
        return Residual(t, ref bytes);
    }

    /// <summary>
    /// When the initiator sends less than the CDB asks for (EDTL &lt; SPDTL), FCP-4 §9.4.2 (which
    /// iSCSI follows) has the device server process the command normally without the data
    /// beyond EDTL: exactly the bytes sent are written (the engine takes any length), and the
    /// residual reports the overflow. False: nothing to write (GOOD).
    /// </summary>
    private static bool Residual(ScsiTask t, ref int bytes)
    {
        if (t.DataOutLength >= bytes)
        {
            return true;
        }
        bytes = t.DataOutLength;
        if (bytes == 0)
        {
            t.Good();
            return false;
        }
        return true;
    }

    /// <summary>
    /// Every write holds its range shared. The usual case (no COMPARE AND WRITE or ORWRITE on the
    /// range) takes the lock at once and hands back the volume's own ValueTask: the task releases
    /// the lock and finishes the command when it completes, so no async state machine of ours is
    /// rented (the pooled ones miss their cache when completions hop threads under load).
    /// </summary>
    private static ValueTask WriteAsync(ScsiTask t, ulong lba, int bytes, WriteFlags flags)
    {
        var lu = t.Lu;
        var offset = (long)lba << lu.BlockShift;
        var acquire = lu.WriteLock.AcquireAsync(offset, bytes, exclusive: false);
        if (!acquire.IsCompletedSuccessfully)
        {
            return WriteWhenLockedAsync(t, acquire, offset, bytes, flags);
        }
        var token = acquire.Result;
        ValueTask write;
        try
        {
            write = lu.Volume.WriteAsync(offset, t.Buffer.AsMemory(0, bytes), flags | WriteFlags.CompleteInline | (t.Alone ? WriteFlags.Alone : WriteFlags.None));
        }
        catch
        {
            lu.WriteLock.Release(token);
            throw;
        }
        t.HeldRangeLock = token;
        t.GoodOnSuccess = true;
        return write;
    }

    [AsyncMethodBuilder(typeof(Ballast.Engine.Async.PooledValueTaskBuilder))]
    private static async ValueTask WriteWhenLockedAsync(ScsiTask t, ValueTask<int> acquire, long offset, int bytes, WriteFlags flags)
    {
        var lu = t.Lu;
        var token = await acquire.ConfigureAwait(false);
        try
        {
            await lu.Volume.WriteAsync(offset, t.Buffer.AsMemory(0, bytes), flags).ConfigureAwait(false);
        }
        finally
        {
            lu.WriteLock.Release(token);
        }
        t.Good();
    }

    /// <summary>
    /// MAXIMUM ATOMIC TRANSFER LENGTH in blocks: at most 1 MiB and 256 blocks. The engine stores a
    /// write of up to 256 of its 4 KiB blocks as one log record, which replay applies whole or
    /// not at all; the exclusive range lock makes it atomic against other writers too.
    /// </summary>
    public static uint MaxAtomicBlocks(LogicalUnit lu) => (uint)Math.Min(256, (1 << 20) >> lu.BlockShift);

    /// <summary>WRITE ATOMIC(16) (SBC-4 §5.48): all of the blocks or none; no boundaries (ATOMIC BOUNDARY must be 0).</summary>
    public static ValueTask WriteAtomic(ScsiTask t)
    {
        var lba = t.U64(2);
        uint blocks = t.U16(12);
        if ((t.Cdb[1] & ProtectMask) != 0)
        {
            t.InvalidFieldInCdb(1);
            return default;
        }
        if (!BlockRange.Check(t, lba, blocks))
        {
            return default;
        }
        if (t.U16(10) != 0 || blocks > MaxAtomicBlocks(t.Lu))
        {
            t.InvalidFieldInCdb(t.U16(10) != 0 ? 10 : 12);
            return default;
        }
        if (blocks == 0)
        {
            t.Good();
            return default;
        }
        var bytes = (int)blocks << t.Lu.BlockShift;
        t.TransferLength = bytes;
        if (t.DataOutLength < bytes)
        {
            t.CheckCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInInformationUnit); // never a partial atomic write
            return default;
        }
        var fua = (t.Cdb[1] & Fua) != 0 || !t.Lu.Mode.WriteCacheEnabled;
        return AtomicAsync(t, lba, bytes, fua ? WriteFlags.Fua : WriteFlags.None);
    }

    private static async ValueTask AtomicAsync(ScsiTask t, ulong lba, int bytes, WriteFlags flags)
    {
        var lu = t.Lu;
        var offset = (long)lba << lu.BlockShift;
        var token = await lu.WriteLock.AcquireAsync(offset, bytes, exclusive: true).ConfigureAwait(false);
        try
        {
            await lu.Volume.WriteAsync(offset, t.Buffer.AsMemory(0, bytes), flags).ConfigureAwait(false);
        }
        finally
        {
            lu.WriteLock.Release(token);
        }
        t.Good();
    }

    /// <summary>ORWRITE(16) (SBC-3 §5.9): medium = medium OR data, atomically against other writers.</summary>
    public static ValueTask OrWrite(ScsiTask t)
    {
        BlockRange.Decode(t, out var lba, out var blocks);
        if ((t.Cdb[1] & ProtectMask) != 0)
        {
            t.InvalidFieldInCdb();
            return default;
        }
        if (!BeginWrite(t, lba, blocks, out var bytes))
        {
            return default;
        }
        return OrWriteAsync(t, lba, bytes, (t.Cdb[1] & Fua) != 0 ? WriteFlags.Fua : WriteFlags.None);
    }

    private static async ValueTask OrWriteAsync(ScsiTask t, ulong lba, int bytes, WriteFlags flags)
    {
        var lu = t.Lu;
        var offset = (long)lba << lu.BlockShift;
        var token = await lu.WriteLock.AcquireAsync(offset, bytes, exclusive: true).ConfigureAwait(false);
        var current = System.Buffers.ArrayPool<byte>.Shared.Rent(bytes);
        try
        {
            await lu.Volume.ReadAsync(offset, current.AsMemory(0, bytes)).ConfigureAwait(false);
            var data = t.Buffer.AsSpan(0, bytes);
            for (var i = 0; i < bytes; i++)
            {
                data[i] |= current[i];
            }
            await lu.Volume.WriteAsync(offset, t.Buffer.AsMemory(0, bytes), flags).ConfigureAwait(false);
        }
        finally
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(current);
            lu.WriteLock.Release(token);
        }
        t.Good();
    }
}
