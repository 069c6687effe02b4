using System.Buffers.Binary;
using System.Text;

namespace Ballast.Iscsi.Scsi;

/// <summary>INQUIRY (SPC-4 §6.6): standard data and the VPD pages 00h, 80h, 83h, B0h, B1h, B2h.</summary>
internal static class InquiryCommand
{
    private const byte DirectAccessBlockDevice = 0x00;
    private const byte NoDevice = 0x7f; // peripheral qualifier 011b, type 1Fh: no LU at this LUN
    private static readonly byte[] SupportedPages = [0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2];

    public static ValueTask Execute(ScsiTask t)
    {
        var evpd = (t.Cdb[1] & 0x01) != 0;
        var page = t.Cdb[2];
        var alloc = t.U16(3);
        if ((t.Cdb[1] & 0xfe) != 0 || (!evpd && page != 0))
        {
            t.InvalidFieldInCdb();
            return default;
        }
        if (!evpd)
        {
            Standard(t);
        }
        else if (t.Nexus is null)
        {
            // No LU: only the peripheral qualifier answer makes sense.
            var d = t.DataIn(4);
            d[0] = NoDevice;
            d[1] = page;
        }
        else
        {
            var ok = page switch
            {
                0x00 => Supported(t),
                0x80 => SerialNumber(t),
                0x83 => DeviceIdentification(t),
                0xb0 => BlockLimits(t),
                0xb1 => BlockDeviceCharacteristics(t),
                0xb2 => LogicalBlockProvisioning(t),
                _ => false,
            };
            if (!ok)
            {
                t.InvalidFieldInCdb();
                return default;
            }
        }
        t.Truncate(alloc);
        t.Good();
        return default;
    }

    private static void Standard(ScsiTask t)
    {
        var d = t.DataIn(96);
        d[0] = t.Nexus is null ? NoDevice : DirectAccessBlockDevice;
        d[2] = 0x06; // VERSION: SPC-4
        d[3] = 0x10 | 0x02; // HISUP, RESPONSE DATA FORMAT 2
        d[4] = 96 - 5; // ADDITIONAL LENGTH
        d[7] = 0x02; // CMDQUE
        Ascii(d[8..16], "BALLAST");
        Ascii(d[16..32], "VOLUME");
        Ascii(d[32..36], "0001");
        // Version descriptors (§6.6.2, Table 144): SAM-5, iSCSI, SPC-4, SBC-3.
        BinaryPrimitives.WriteUInt16BigEndian(d[58..], 0x00a0);
        BinaryPrimitives.WriteUInt16BigEndian(d[60..], 0x0960);
        BinaryPrimitives.WriteUInt16BigEndian(d[62..], 0x0460);
        BinaryPrimitives.WriteUInt16BigEndian(d[64..], 0x04c0);
    }

    private static bool Supported(ScsiTask t)
    {
        var d = t.DataIn(4 + SupportedPages.Length);
        d[1] = 0x00;
        d[3] = (byte)SupportedPages.Length;
        SupportedPages.CopyTo(d[4..]);
        return true;
    }

    /// <summary>Unit serial number (§7.8.17): the volume's UID in hex, stable across restarts and renames.</summary>
    private static bool SerialNumber(ScsiTask t)
    {
        var serial = t.Lu.Uid.ToString("N");
        var d = t.DataIn(4 + serial.Length);
        d[1] = 0x80;
        d[3] = (byte)serial.Length;
        Ascii(d[4..], serial);
        return true;
    }

    /// <summary>NAA 6 identifier derived from the volume UID: the NAA nibble then 124 bits of the UID.</summary>
    internal static ulong[] Naa(Guid uid)
    {
        Span<byte> b = stackalloc byte[16];
        uid.TryWriteBytes(b, bigEndian: true, out _);
        var hi = BinaryPrimitives.ReadUInt64BigEndian(b);
        var lo = BinaryPrimitives.ReadUInt64BigEndian(b[8..]);
        return [(6UL << 60) | (hi >> 4), (hi << 60) | (lo >> 4)];
    }

    /// <summary>Device identification (§7.8.6): NAA and T10 vendor ID for the LU, relative port and SCSI name of the target port.</summary>
    private static bool DeviceIdentification(ScsiTask t)
    {
        var lu = t.Lu;
        var vendorId = "BALLAST " + lu.Uid.ToString("N");
        var port = Encoding.UTF8.GetBytes(t.Nexus!.TargetPort);
        var portLen = (port.Length + 1 + 3) & ~3; // NUL-terminated, multiple of 4
        var length = (4 + 16) + (4 + vendorId.Length) + (4 + 4) + (4 + portLen);
        var d = t.DataIn(4 + length);
        d[1] = 0x83;
        BinaryPrimitives.WriteUInt16BigEndian(d[2..], (ushort)length);
        var o = 4;
        // NAA, binary, associated with the LU.
        d[o] = 0x01;
        d[o + 1] = 0x03;
        d[o + 3] = 16;
        var naa = Naa(lu.Uid);
        BinaryPrimitives.WriteUInt64BigEndian(d[(o + 4)..], naa[0]);
        BinaryPrimitives.WriteUInt64BigEndian(d[(o + 12)..], naa[1]);
        o += 20;
        // T10 vendor ID, ASCII, LU.
        d[o] = 0x02;
        d[o + 1] = 0x01;
        d[o + 3] = (byte)vendorId.Length;
        Ascii(d[(o + 4)..], vendorId);
        o += 4 + vendorId.Length;
        // Relative target port identifier, binary, target port, iSCSI (PIV).
        d[o] = 0x51;
        d[o + 1] = 0x80 | 0x10 | 0x04;
        d[o + 3] = 4;
        BinaryPrimitives.WriteUInt16BigEndian(d[(o + 6)..], 1);
        o += 8;
        // SCSI name string, UTF-8, target port: "iqn...,t,0x0001".
        d[o] = 0x53;
        d[o + 1] = 0x80 | 0x10 | 0x08;
        d[o + 3] = (byte)portLen;
        port.CopyTo(d[(o + 4)..]);
        return true;
    }

    /// <summary>Block limits (SBC-3 §6.5.3).</summary>
    private static bool BlockLimits(ScsiTask t)
    {
        var lu = t.Lu;
        var d = t.DataIn(64);
        d[1] = 0xb0;
        d[3] = 0x3c;
        var maxBlocks = (uint)(lu.MaxTransferLength >> lu.BlockShift);
        d[5] = (byte)Math.Min(255u, maxBlocks / 2); // MAXIMUM COMPARE AND WRITE LENGTH
        var granularity = (ushort)Math.Max(1, 4096 >> lu.BlockShift);
        BinaryPrimitives.WriteUInt16BigEndian(d[6..], granularity); // OPTIMAL TRANSFER LENGTH GRANULARITY
        BinaryPrimitives.WriteUInt32BigEndian(d[8..], maxBlocks); // MAXIMUM TRANSFER LENGTH
        BinaryPrimitives.WriteUInt32BigEndian(d[12..], Math.Min(maxBlocks, (uint)((1 << 20) >> lu.BlockShift))); // OPTIMAL TRANSFER LENGTH
        if (lu.ThinProvisioned)
        {
            BinaryPrimitives.WriteUInt32BigEndian(d[20..], 0xffffffff); // MAXIMUM UNMAP LBA COUNT
            BinaryPrimitives.WriteUInt32BigEndian(d[24..], UnmapCommand.MaxDescriptors); // MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT
            // OPTIMAL UNMAP GRANULARITY, but not reported (0) on LUs with blocks over 512 bytes:
            // there it is one block anyway, and qemu's iSCSI driver (7.2 to today) takes a
            // granularity as its cluster size and then, on each large read, asks the LBA status
            // of a range 512-byte but not block aligned and aborts on its own assertion. Linux
            // falls back to the physical block size, the same 4 KiB.
            BinaryPrimitives.WriteUInt32BigEndian(d[28..], lu.BlockShift > 9 ? 0u : granularity);
        }
        BinaryPrimitives.WriteUInt64BigEndian(d[36..], WriteSameCommands.MaxBlocks(lu)); // MAXIMUM WRITE SAME LENGTH
        BinaryPrimitives.WriteUInt32BigEndian(d[44..], ReadWriteCommands.MaxAtomicBlocks(lu)); // MAXIMUM ATOMIC TRANSFER LENGTH
        BinaryPrimitives.WriteUInt32BigEndian(d[48..], 1); // ATOMIC ALIGNMENT
        BinaryPrimitives.WriteUInt32BigEndian(d[52..], 1); // ATOMIC TRANSFER LENGTH GRANULARITY
        return true;
    }

    /// <summary>Block device characteristics (SBC-3 §6.5.2): non-rotating medium.</summary>
    private static bool BlockDeviceCharacteristics(ScsiTask t)
    {
        var d = t.DataIn(64);
        d[1] = 0xb1;
        d[3] = 0x3c;
        BinaryPrimitives.WriteUInt16BigEndian(d[4..], 1); // MEDIUM ROTATION RATE: non-rotating
        return true;
    }

    /// <summary>Logical block provisioning (SBC-3 §6.5.4): LBPU, LBPWS, LBPWS10, LBPRZ for thin volumes.</summary>
    private static bool LogicalBlockProvisioning(ScsiTask t)
    {
        var d = t.DataIn(8);
        d[1] = 0xb2;
        d[3] = 4;
        if (t.Lu.ThinProvisioned)
        {
            d[5] = 0x80 | 0x40 | 0x20 | 0x04; // LBPU, LBPWS, LBPWS10, LBPRZ (unmapped blocks read as zeroes)
            d[6] = 0x02; // PROVISIONING TYPE: thin
        }
        return true;
    }

    private static void Ascii(Span<byte> field, string text)
    {
        field.Fill((byte)' ');
        Encoding.ASCII.GetBytes(text.AsSpan(0, Math.Min(text.Length, field.Length)), field);
    }
}
