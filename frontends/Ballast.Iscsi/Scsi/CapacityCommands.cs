using System.Buffers.Binary;
using Ballast.Engine.Volumes;

namespace Ballast.Iscsi.Scsi;

/// <summary>READ CAPACITY(10/16) (SBC-3 §5.15, §5.16) and GET LBA STATUS (§5.3).</summary>
internal static class CapacityCommands
{
    public static ValueTask ReadCapacity10(ScsiTask t)
    {
        // PMI is obsolete: with PMI=0 the LBA field must be zero (SBC-3 §5.15.1).
        if ((t.Cdb[8] & 0x01) == 0 && t.U32(2) != 0)
        {
            t.InvalidFieldInCdb();
            return default;
        }
        var lu = t.Lu;
        var last = lu.BlockCount - 1;
        var d = t.DataIn(8);
        BinaryPrimitives.WriteUInt32BigEndian(d, last > uint.MaxValue ? uint.MaxValue : (uint)last);
        BinaryPrimitives.WriteUInt32BigEndian(d[4..], (uint)lu.BlockSize);
        t.Good();
        return default;
    }

    public static ValueTask ReadCapacity16(ScsiTask t)
    {
        var alloc = t.U32(10);
        var lu = t.Lu;
        var d = t.DataIn(32);
        BinaryPrimitives.WriteUInt64BigEndian(d, (ulong)(lu.BlockCount - 1));
        BinaryPrimitives.WriteUInt32BigEndian(d[8..], (uint)lu.BlockSize);
        // LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT: the engine works in 4 KiB blocks, so a
        // 512-byte LU has 8 logical blocks per physical block (initiators align to it).
        d[13] = (byte)Math.Max(0, 12 - lu.BlockShift);
        if (lu.ThinProvisioned)
        {
            d[14] = 0x80 | 0x40; // LBPME, LBPRZ
        }
        t.Truncate((int)Math.Min(alloc, int.MaxValue));
        t.Good();
        return default;
    }

    /// <summary>Provisioning status of LBAs from the one asked for (SBC-3 §5.3): mapped or deallocated.</summary>
    public static ValueTask GetLbaStatus(ScsiTask t)
    {
        var lu = t.Lu;
        var lba = t.U64(2);
        var alloc = t.U32(10);
        if (lba >= (ulong)lu.BlockCount)
        {
            t.CheckCondition(SenseKey.IllegalRequest, Asc.LogicalBlockAddressOutOfRange);
            return default;
        }
        if (alloc < 24)
        {
            // Room for the header and one descriptor is needed to say anything; a shorter allocation gets what fits.
            alloc = Math.Max(alloc, 0);
        }
        var max = (int)Math.Clamp((alloc - 8) / 16, 1, 256);
        if (alloc < 8)
        {
            max = 1;
        }
        Span<AllocationRange> ranges = stackalloc AllocationRange[max];
        var offset = (long)lba << lu.BlockShift;
        var n = lu.Volume.GetAllocation(offset, lu.Volume.Size - offset, ranges);
        var count = 0;
        var d = t.DataIn(8 + (16 * Math.Max(n, 1)));
        for (var i = 0; i < n; i++)
        {
            var r = ranges[i];
            var start = (ulong)r.Offset >> lu.BlockShift;
            var end = (ulong)(r.Offset + r.Length + lu.BlockSize - 1) >> lu.BlockShift;
            var status = r.State == AllocationState.Hole ? (byte)1 : (byte)0;
            if (count > 0)
            {
                // Merge neighbours that map to the same SCSI status (Zero and Data are both "mapped").
                var prev = d.Slice(8 + (16 * (count - 1)), 16);
                if (prev[12] == status)
                {
                    var pStart = BinaryPrimitives.ReadUInt64BigEndian(prev);
                    var total = end - pStart;
                    if (total <= uint.MaxValue)
                    {
                        BinaryPrimitives.WriteUInt32BigEndian(prev[8..], (uint)total);
                        continue;
                    }
                }
            }
            var desc = d.Slice(8 + (16 * count), 16);
            BinaryPrimitives.WriteUInt64BigEndian(desc, start);
            BinaryPrimitives.WriteUInt32BigEndian(desc[8..], (uint)Math.Min(end - start, uint.MaxValue));
            desc[12] = status;
            count++;
        }
        BinaryPrimitives.WriteUInt32BigEndian(d, (uint)(4 + (16 * count)));
        t.DataInLength = 8 + (16 * count);
        t.Truncate((int)Math.Min(alloc, int.MaxValue));
        t.Good();
        return default;
    }
}
