namespace Ballast.Iscsi.Scsi;

/// <summary>LBA and transfer length decoding for the 6/10/12/16-byte CDB layouts (SBC-3 §5), and the range checks every medium command makes.</summary>
internal static class BlockRange
{
    /// <summary>Decodes LBA and block count from a READ/WRITE/VERIFY-style CDB.</summary>
    public static void Decode(ScsiTask t, out ulong lba, out uint blocks)
    {
        switch (t.Cdb[0] >> 5)
        {
            case 0: // 6-byte: 21-bit LBA, 8-bit length where 0 means 256 (READ(6)/WRITE(6))
                lba = (ulong)(((t.Cdb[1] & 0x1f) << 16) | (t.Cdb[2] << 8) | t.Cdb[3]);
                blocks = t.Cdb[4] == 0 ? 256u : t.Cdb[4];
                break;
            case 1:
            case 2: // 10-byte
                lba = t.U32(2);
                blocks = t.U16(7);
                break;
            case 5: // 12-byte
                lba = t.U32(2);
                blocks = t.U32(6);
                break;
            default: // 16-byte
                lba = t.U64(2);
                blocks = t.U32(10);
                break;
        }
    }

    /// <summary>LBA OUT OF RANGE unless [lba, lba+blocks) is inside the LU; no overflow for any input.</summary>
    public static bool Check(ScsiTask t, ulong lba, ulong blocks)
    {
        var count = (ulong)t.Lu.BlockCount;
        if (lba > count || blocks > count - lba)
        {
            t.CheckCondition(SenseKey.IllegalRequest, Asc.LogicalBlockAddressOutOfRange);
            return false;
        }
        return true;
    }

    /// <summary>INVALID FIELD IN CDB when the transfer would exceed MAXIMUM TRANSFER LENGTH.</summary>
    public static bool CheckTransfer(ScsiTask t, ulong blocks)
    {
        if (blocks > (ulong)(t.Lu.MaxTransferLength >> t.Lu.BlockShift))
        {
            t.InvalidFieldInCdb();
            return false;
        }
        return true;
    }
}
