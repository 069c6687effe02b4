using System.Buffers.Binary;

namespace Ballast.Iscsi.Scsi;

/// <summary>
/// MODE SENSE(6/10) and MODE SELECT(6/10) (SPC-4 §6.9-6.12) with the pages an initiator asks a
/// disk for: Read-Write Error Recovery (01h), Disconnect-Reconnect (02h), Caching (08h), Control
/// (0Ah), Control Extension (0Ah/01h), Power Condition (1Ah), Informational Exceptions (1Ch).
/// Changeable: WCE (caching), D_SENSE and SWP (control).
/// </summary>
internal static class ModeCommands
{
    private const byte AllPages = 0x3f;
    private const byte AllSubpages = 0xff;

    private static readonly (byte Page, byte Subpage, byte Length)[] Pages =
    [
        (0x01, 0x00, 0x0a),
        (0x02, 0x00, 0x0e),
        (0x08, 0x00, 0x12),
        (0x0a, 0x00, 0x0a),
        (0x0a, 0x01, 0x1c),
        (0x1a, 0x00, 0x26),
        (0x1c, 0x00, 0x0a),
    ];

    private enum PageControl
    {
        Current = 0,
        Changeable = 1,
        Default = 2,
        Saved = 3,
    }

    public static ValueTask Sense(ScsiTask t)
    {
        var six = t.Cdb[0] == ScsiOpcodes.ModeSense6;
        var dbd = (t.Cdb[1] & 0x08) != 0;
        var llbaa = !six && (t.Cdb[1] & 0x10) != 0;
        var pc = (PageControl)(t.Cdb[2] >> 6);
        var page = (byte)(t.Cdb[2] & 0x3f);
        var subpage = t.Cdb[3];
        var alloc = six ? t.Cdb[4] : t.U16(7);
        if (pc == PageControl.Saved)
        {
            t.CheckCondition(SenseKey.IllegalRequest, Asc.SavingParametersNotSupported);
            return default;
        }
        var lu = t.Lu;
        Span<byte> pages = stackalloc byte[512];
        var n = 0;
        var any = false;
        foreach (var (p, sp, len) in Pages)
        {
            var want = page == AllPages
                ? subpage == 0x00 ? sp == 0 : subpage == AllSubpages
                : p == page && (subpage == sp || (subpage == AllSubpages));
            if (!want)
            {
                continue;
            }
            any = true;
            n += BuildPage(pages[n..], lu, p, sp, len, pc);
        }
        if (!any)
        {
            t.InvalidFieldInCdb();
            return default;
        }
        var header = six ? 4 : 8;
        var blockDescriptor = dbd ? 0 : llbaa ? 16 : 8;
        var total = header + blockDescriptor + n;
        var d = t.DataIn(total);
        var deviceSpecific = (byte)((lu.WriteProtected ? 0x80 : 0) | 0x10); // WP, DPOFUA
        if (six)
        {
            d[0] = (byte)Math.Min(total - 1, 255);
            d[2] = deviceSpecific;
            d[3] = (byte)blockDescriptor;
        }
        else
        {
            BinaryPrimitives.WriteUInt16BigEndian(d, (ushort)(total - 2));
            d[3] = deviceSpecific;
            d[4] = (byte)(llbaa ? 0x01 : 0x00);
            BinaryPrimitives.WriteUInt16BigEndian(d[6..], (ushort)blockDescriptor);
        }
        var bd = d[header..];
        if (blockDescriptor == 8)
        {
            var blocks = lu.BlockCount;
            BinaryPrimitives.WriteUInt32BigEndian(bd, blocks > 0xffffff ? 0xffffffu : (uint)blocks); // byte 0 (density) is overwritten below
            bd[0] = 0;
            if (blocks > 0xffffff)
            {
                bd[1] = bd[2] = bd[3] = 0xff;
            }
            else
            {
                bd[1] = (byte)(blocks >> 16);
                bd[2] = (byte)(blocks >> 8);
                bd[3] = (byte)blocks;
            }
            BinaryPrimitives.WriteUInt32BigEndian(bd[4..], (uint)lu.BlockSize);
        }
        else if (blockDescriptor == 16)
        {
            BinaryPrimitives.WriteUInt64BigEndian(bd, (ulong)lu.BlockCount);
            BinaryPrimitives.WriteUInt32BigEndian(bd[12..], (uint)lu.BlockSize);
        }
        pages[..n].CopyTo(d[(header + blockDescriptor)..]);
        t.Truncate(alloc);
        t.Good();
        return default;
    }

    private static int BuildPage(Span<byte> d, LogicalUnit lu, byte page, byte subpage, byte length, PageControl pc)
    {
        int size;
        if (subpage == 0)
        {
            d[0] = page;
            d[1] = length;
            size = 2 + length;
        }
        else
        {
            d[0] = (byte)(page | 0x40); // SPF
            d[1] = subpage;
            BinaryPrimitives.WriteUInt16BigEndian(d[2..], length);
            size = 4 + length;
        }
        d[(size - length)..size].Clear();
        var changeable = pc == PageControl.Changeable;
        var current = pc == PageControl.Current;
        switch (page, subpage)
        {
            case (0x08, 0):
                // Caching: WCE; RCD stays 0 (reads may be cached).
                if (changeable || (current ? lu.Mode.WriteCacheEnabled : true))
                {
                    d[2] = 0x04;
                }
                break;
            case (0x0a, 0):
                // Control: QUEUE ALGORITHM MODIFIER 1 (unrestricted reordering), TAS, D_SENSE, SWP.
                if (changeable)
                {
                    d[2] = 0x04;
                    d[4] = 0x08;
                }
                else
                {
                    d[2] = (byte)(current && lu.Mode.DescriptorSense ? 0x04 : 0);
                    d[3] = 0x10;
                    d[4] = (byte)(current && lu.Mode.SoftwareWriteProtect ? 0x08 : 0);
                    d[5] = 0x40;
                    BinaryPrimitives.WriteUInt16BigEndian(d[8..], 0xffff); // BUSY TIMEOUT PERIOD: unlimited
                }
                break;
            case (0x1c, 0):
                // Informational exceptions: no reporting (MRIE 0), DEXCPT set.
                if (!changeable)
                {
                    d[2] = 0x08;
                }
                break;
        }
        return size;
    }

    public static ValueTask Select(ScsiTask t)
    {
        var six = t.Cdb[0] == ScsiOpcodes.ModeSelect6;
        var pf = (t.Cdb[1] & 0x10) != 0;
        var sp = (t.Cdb[1] & 0x01) != 0;
        var listLength = six ? t.Cdb[4] : t.U16(7);
        if (!pf || sp)
        {
            // Only SPC page format; there is nothing to save pages to.
            t.InvalidFieldInCdb();
            return default;
        }
        if (listLength == 0)
        {
            t.Good();
            return default;
        }
        var header = six ? 4 : 8;
        if (listLength < header || t.DataOutLength < listLength)
        {
            t.CheckCondition(SenseKey.IllegalRequest, Asc.ParameterListLengthError);
            return default;
        }
        var p = t.DataOut[..listLength];
        var bdLength = six ? p[3] : BinaryPrimitives.ReadUInt16BigEndian(p[6..]);
        var o = header + bdLength;
        if (o > p.Length)
        {
            t.CheckCondition(SenseKey.IllegalRequest, Asc.ParameterListLengthError);
            return default;
        }
        var lu = t.Lu;
        bool? wce = null, dsense = null, swp = null;
        Span<byte> cur = stackalloc byte[4 + 0x26];
        Span<byte> mask = stackalloc byte[4 + 0x26];
        while (o < p.Length)
        {
            if (p.Length - o < 2)
            {
                t.CheckCondition(SenseKey.IllegalRequest, Asc.ParameterListLengthError);
                return default;
            }
            var page = (byte)(p[o] & 0x3f);
            var spf = (p[o] & 0x40) != 0;
            byte subpage = 0;
            int length, start;
            if (spf)
            {
                if (p.Length - o < 4)
                {
                    t.CheckCondition(SenseKey.IllegalRequest, Asc.ParameterListLengthError);
                    return default;
                }
                subpage = p[o + 1];
                length = BinaryPrimitives.ReadUInt16BigEndian(p[(o + 2)..]);
                start = o + 4;
            }
            else
            {
                length = p[o + 1];
                start = o + 2;
            }
            if (start + length > p.Length)
            {
                t.CheckCondition(SenseKey.IllegalRequest, Asc.ParameterListLengthError);
                return default;
            }
            var known = Array.FindIndex(Pages, x => x.Page == page && x.Subpage == subpage);
            if (known < 0 || Pages[known].Length != length)
            {
                t.CheckCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInParameterList);
                return default;
            }
            var body = p.Slice(start, length);
            // Every bit outside the changeable mask must equal the current value (SPC-4 §6.11).
            var hdr = BuildPage(cur, lu, page, subpage, (byte)length, PageControl.Current) - length;
            BuildPage(mask, lu, page, subpage, (byte)length, PageControl.Changeable);
            for (var i = 0; i < length; i++)
            {
                if (((body[i] ^ cur[hdr + i]) & ~mask[hdr + i]) != 0)
                {
                    t.CheckCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInParameterList);
                    return default;
                }
            }
            switch (page, subpage)
            {
                case (0x08, 0):
                    wce = (body[0] & 0x04) != 0;
                    break;
                case (0x0a, 0):
                    dsense = (body[0] & 0x04) != 0;
                    swp = (body[2] & 0x08) != 0;
                    break;
            }
            o = start + length;
        }
        var changed = false;
        if (wce is { } w && w != lu.Mode.WriteCacheEnabled)
        {
            lu.Mode.WriteCacheEnabled = w;
            changed = true;
        }
        if (dsense is { } ds && ds != lu.Mode.DescriptorSense)
        {
            lu.Mode.DescriptorSense = ds;
            changed = true;
        }
        if (swp is { } s && s != lu.Mode.SoftwareWriteProtect)
        {
            lu.Mode.SoftwareWriteProtect = s;
            changed = true;
        }
        if (changed)
        {
            lu.UnitAttentionToAll(Asc.ModeParametersChanged, t.Nexus);
        }
        t.Good();
        return default;
    }
}
