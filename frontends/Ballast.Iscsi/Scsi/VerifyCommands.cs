using System.Buffers;

namespace Ballast.Iscsi.Scsi;

/// <summary>VERIFY(10/12/16) (SBC-3 §5.33) and PRE-FETCH(10/16) (§5.4).</summary>
internal static class VerifyCommands
{
    private const int Chunk = 1 << 20;

    public static ValueTask Verify(ScsiTask t)
    {
        BlockRange.Decode(t, out var lba, out var blocks);
        var bytchk = (t.Cdb[1] >> 1) & 0x03;
        if ((t.Cdb[1] & 0xe0) != 0 || bytchk == 2)
        {
            // VRPROTECT without protection information; BYTCHK 10b reserved.
            t.InvalidFieldInCdb();
            return default;
        }
        if (!BlockRange.Check(t, lba, blocks))
        {
            return default;
        }
        if (blocks == 0)
        {
            t.Good();
            return default;
        }
        if (bytchk == 0)
        {
            return MediumAsync(t, lba, blocks);
        }
        if (!BlockRange.CheckTransfer(t, blocks))
        {
            return default;
        }
        var bs = t.Lu.BlockSize;
        var need = bytchk == 1 ? (int)blocks * bs : bs; // 11b: one block compared with each block
        if (t.DataOutLength < need)
        {
            t.InvalidFieldInCdb();
            return default;
        }
        return CompareAsync(t, lba, (int)blocks, bytchk == 3);
    }

    /// <summary>BYTCHK 0: check the blocks can be read (every block's checksum is verified by the engine).</summary>
    private static async ValueTask MediumAsync(ScsiTask t, ulong lba, uint blocks)
    {
        var lu = t.Lu;
        var offset = (long)lba << lu.BlockShift;
        var remaining = (long)blocks << lu.BlockShift;
        var buffer = ArrayPool<byte>.Shared.Rent((int)Math.Min(remaining, Chunk));
        try
        {
            while (remaining > 0)
            {
                var n = (int)Math.Min(remaining, buffer.Length);
                await lu.Volume.ReadAsync(offset, buffer.AsMemory(0, n)).ConfigureAwait(false);
                offset += n;
                remaining -= n;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
        t.Good();
    }

    private static async ValueTask CompareAsync(ScsiTask t, ulong lba, int blocks, bool oneBlock)
    {
        var lu = t.Lu;
        var bytes = blocks << lu.BlockShift;
        var medium = ArrayPool<byte>.Shared.Rent(bytes);
        try
        {
            await lu.Volume.ReadAsync((long)lba << lu.BlockShift, medium.AsMemory(0, bytes)).ConfigureAwait(false);
            var mismatch = FirstMismatch(medium.AsSpan(0, bytes), t.Buffer.AsSpan(0, oneBlock ? lu.BlockSize : bytes), oneBlock);
            if (mismatch >= 0)
            {
                // MISCOMPARE; INFORMATION is the offset of the first differing byte (§5.33.1).
                t.CheckCondition(SenseKey.Miscompare, Asc.MiscompareDuringVerifyOperation, (ulong)mismatch);
                return;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(medium);
        }
        t.Good();
    }

    internal static int FirstMismatch(ReadOnlySpan<byte> medium, ReadOnlySpan<byte> expected, bool repeat)
    {
        if (!repeat)
        {
            var i = medium.CommonPrefixLength(expected);
            return i == medium.Length ? -1 : i;
        }
        for (var o = 0; o < medium.Length; o += expected.Length)
        {
            var i = medium.Slice(o, expected.Length).CommonPrefixLength(expected);
            if (i != expected.Length)
            {
                return o + i;
            }
        }
        return -1;
    }

    /// <summary>PRE-FETCH: nothing to stage (no read cache of our own); range-checked, GOOD (§5.4: CONDITION MET only if it would fit a cache).</summary>
    public static ValueTask PreFetch(ScsiTask t)
    {
        ulong lba;
        uint blocks;
        if (t.Cdb[0] == ScsiOpcodes.PreFetch10)
        {
            lba = t.U32(2);
            blocks = t.U16(7);
        }
        else
        {
            lba = t.U64(2);
            blocks = t.U32(10);
        }
        if (BlockRange.Check(t, lba, blocks))
        {
            t.Good();
        }
        return default;
    }
}
