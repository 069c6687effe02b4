using System.Buffers;
using Ballast.Engine.Volumes;

namespace Ballast.Iscsi.Scsi;

/// <summary>
/// WRITE SAME(10/16) (SBC-3 §5.41, §5.42). A zero block becomes <c>WriteZeroesAsync</c> (with
/// the UNMAP bit it may deallocate); any other block is written repeatedly in 1 MiB chunks.
/// A NUMBER OF LOGICAL BLOCKS of zero means "to the end of the medium" (WSNZ is 0); every
/// request, that one included, is limited to MAXIMUM WRITE SAME LENGTH.
/// </summary>
internal static class WriteSameCommands
{
    private const int Chunk = 1 << 20;

    /// <summary>
    /// MAXIMUM WRITE SAME LENGTH in blocks (Block Limits VPD): the maximum transfer length, so an
    /// initiator can read back whatever it wrote with one command.
    /// </summary>
    public static ulong MaxBlocks(LogicalUnit lu) => (ulong)(lu.MaxTransferLength >> lu.BlockShift);

    public static ValueTask WriteSame(ScsiTask t)
    {
        var ws16 = t.Cdb[0] == ScsiOpcodes.WriteSame16;
        var flags = t.Cdb[1];
        var unmap = (flags & 0x08) != 0;
        var ndob = ws16 && (flags & 0x01) != 0;
        ulong lba = ws16 ? t.U64(2) : t.U32(2);
        ulong blocks = ws16 ? t.U32(10) : t.U16(7);
        var lu = t.Lu;
        if ((flags & 0xe0) != 0 || (flags & 0x10) != 0 || (!ws16 && (flags & 0x01) != 0))
        {
            // WRPROTECT (no protection information), ANCHOR (not supported), reserved bits.
            t.InvalidFieldInCdb();
            return default;
        }
        if (unmap && !lu.ThinProvisioned)
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
            blocks = (ulong)lu.BlockCount - lba; // WSNZ=0: zero means "to the end of the medium"
        }
        if (blocks > MaxBlocks(lu) || (ndob ? t.DataOutLength != 0 : t.DataOutLength != lu.BlockSize))
        {
            // Longer than MAXIMUM WRITE SAME LENGTH, or a Data-Out buffer that is not exactly one block.
            t.InvalidFieldInCdb();
            return default;
        }
        if (blocks == 0)
        {
            t.Good();
            return default;
        }
        // With UNMAP the blocks are deallocated whatever the data says; LBPRZ makes them read as zeroes (SBC-3 §5.42).
        var zero = ndob || unmap || !t.Buffer.AsSpan(0, lu.BlockSize).ContainsAnyExcept((byte)0);
        return RunAsync(t, (long)lba << lu.BlockShift, (long)blocks << lu.BlockShift, zero, unmap);
    }

    private static async ValueTask RunAsync(ScsiTask t, long offset, long length, bool zero, bool unmap)
    {
        var lu = t.Lu;
        var token = await lu.WriteLock.AcquireAsync(offset, length, exclusive: false).ConfigureAwait(false);
        try
        {
            if (zero)
            {
                await lu.Volume.WriteZeroesAsync(offset, length, mayDeallocate: unmap).ConfigureAwait(false);
            }
            else
            {
                var bs = lu.BlockSize;
                var n = (int)Math.Min(length, Chunk);
                var pattern = ArrayPool<byte>.Shared.Rent(n);
                try
                {
                    for (var o = 0; o < n; o += bs)
                    {
                        t.Buffer.AsSpan(0, bs).CopyTo(pattern.AsSpan(o));
                    }
                    for (long done = 0; done < length;)
                    {
                        var c = (int)Math.Min(length - done, n);
                        await lu.Volume.WriteAsync(offset + done, pattern.AsMemory(0, c), WriteFlags.None).ConfigureAwait(false);
                        done += c;
                    }
                }
                finally
                {
                    ArrayPool<byte>.Shared.Return(pattern);
                }
            }
            if (!lu.Mode.WriteCacheEnabled)
            {
                await lu.Volume.FlushAsync().ConfigureAwait(false);
            }
        }
        finally
        {
            lu.WriteLock.Release(token);
        }
        t.Good();
    }
}
