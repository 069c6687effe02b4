namespace Ballast.Iscsi.Pdu;

/// <summary>The 8-byte LUN field (SAM-5 §4.7): peripheral device addressing for LUN 0-255, flat space above.</summary>
internal static class LunAddress
{
    public static ulong Encode(int lun) =>
        lun < 256 ? (ulong)lun << 48 : ((ulong)(0x40 | ((lun >> 8) & 0x3f)) << 56) | ((ulong)(lun & 0xff) << 48);

    /// <summary>The LUN number, or -1 for an address form we do not serve.</summary>
    public static int Decode(ulong field)
    {
        if ((field & 0x0000ffffffffffff) != 0)
        {
            return -1;
        }
        var b0 = (int)(field >> 56);
        var b1 = (int)(field >> 48) & 0xff;
        return (b0 & 0xc0) switch
        {
            0x00 when b0 == 0 => b1,
            0x40 => ((b0 & 0x3f) << 8) | b1,
            _ => -1,
        };
    }
}
