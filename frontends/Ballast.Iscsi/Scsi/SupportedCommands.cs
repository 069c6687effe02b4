using System.Buffers.Binary;

namespace Ballast.Iscsi.Scsi;

/// <summary>REPORT SUPPORTED OPERATION CODES (SPC-4 §6.35) and REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS (§6.36), generated from the command table.</summary>
internal static class SupportedCommands
{
    private const int TimeoutsDescriptorLength = 12;

    public static ValueTask ReportOpcodes(ScsiTask t)
    {
        var rctd = (t.Cdb[2] & 0x80) != 0;
        var options = t.Cdb[2] & 0x07;
        var opcode = t.Cdb[3];
        var sa = t.U16(4);
        var alloc = (int)Math.Min(t.U32(6), int.MaxValue);
        if (options == 0)
        {
            var each = 8 + (rctd ? TimeoutsDescriptorLength : 0);
            var d = t.DataIn(4 + (each * CommandTable.All.Length));
            BinaryPrimitives.WriteUInt32BigEndian(d, (uint)(each * CommandTable.All.Length));
            var o = 4;
            foreach (var c in CommandTable.All)
            {
                d[o] = c.Opcode;
                BinaryPrimitives.WriteUInt16BigEndian(d[(o + 2)..], (ushort)Math.Max(c.ServiceAction, 0));
                d[o + 5] = (byte)((rctd ? 0x02 : 0) | (c.HasServiceAction ? 0x01 : 0)); // CTDP, SERVACTV
                BinaryPrimitives.WriteUInt16BigEndian(d[(o + 6)..], (ushort)c.CdbLength);
                if (rctd)
                {
                    BinaryPrimitives.WriteUInt16BigEndian(d[(o + 8)..], 0x0a);
                }
                o += each;
            }
        }
        else if (options is 1 or 2 or 3)
        {
            ScsiCommand? c;
            if (options == 1)
            {
                if (CommandTable.UsesServiceAction(opcode))
                {
                    t.InvalidFieldInCdb(3); // this opcode needs a service action
                    return default;
                }
                c = CommandTable.Find(opcode, -1);
            }
            else if (options == 2)
            {
                if (!CommandTable.UsesServiceAction(opcode))
                {
                    t.InvalidFieldInCdb(3);
                    return default;
                }
                c = CommandTable.Find(opcode, sa);
            }
            else
            {
                c = CommandTable.UsesServiceAction(opcode) ? CommandTable.Find(opcode, sa) : (sa == 0 ? CommandTable.Find(opcode, -1) : null);
            }
            var usage = c?.Usage ?? [];
            var d = t.DataIn(4 + usage.Length + (rctd && c != null ? TimeoutsDescriptorLength : 0));
            d[1] = (byte)((rctd && c != null ? 0x80 : 0) | (c != null ? 0x03 : 0x01)); // SUPPORT: 011b supported, 001b not
            BinaryPrimitives.WriteUInt16BigEndian(d[2..], (ushort)usage.Length);
            usage.CopyTo(d[4..]);
            if (c != null && c.HasServiceAction)
            {
                d[5] = (byte)c.ServiceAction; // usage data byte 1 carries the service action
            }
            if (rctd && c != null)
            {
                BinaryPrimitives.WriteUInt16BigEndian(d[(4 + usage.Length)..], 0x0a);
            }
        }
        else
        {
            t.InvalidFieldInCdb(2);
            return default;
        }
        t.Truncate(alloc);
        t.Good();
        return default;
    }

    public static ValueTask ReportTmfs(ScsiTask t)
    {
        var repd = (t.Cdb[2] & 0x80) != 0;
        var alloc = (int)Math.Min(t.U32(6), int.MaxValue);
        if (alloc < 4)
        {
            t.InvalidFieldInCdb(6);
            return default;
        }
        var d = t.DataIn(repd ? 16 : 4);
        d[0] = 0x80 | 0x40 | 0x08 | 0x02; // ATS, ATSS, LURS, TRS (cold reset too, which TRS covers)
        if (repd)
        {
            d[3] = 0x0c; // ADDITIONAL DATA LENGTH
        }
        t.Truncate(alloc);
        t.Good();
        return default;
    }
}
