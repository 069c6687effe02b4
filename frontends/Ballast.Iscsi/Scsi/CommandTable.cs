using Ballast.Iscsi.Reservations;
using static Ballast.Iscsi.Scsi.ScsiOpcodes;

namespace Ballast.Iscsi.Scsi;

internal delegate ValueTask ScsiHandler(ScsiTask task);

[Flags]
internal enum CommandFlags
{
    None = 0,
    /// <summary>Served for a LUN that does not exist and not held back by unit attentions (INQUIRY, REPORT LUNS, REQUEST SENSE; SAM-5 §5.14).</summary>
    AnyLun = 1,
    /// <summary>Changes the medium: refused with DATA PROTECT on write-protected LUNs.</summary>
    WritesMedium = 2,
}

/// <summary>One supported command: a row of the table (opcode, service action, handler, and what REPORT SUPPORTED OPERATION CODES says of it).</summary>
internal sealed record ScsiCommand(byte Opcode, int ServiceAction, string Name, ScsiHandler Handler, ReservationClass Reservation, CommandFlags Flags, byte[] Usage)
{
    public bool HasServiceAction => ServiceAction >= 0;
    public int CdbLength => Usage.Length;
}

/// <summary>
/// The command set: opcode (and service action) to handler, like tgt's spc.c/sbc.c tables. A new
/// command is one row here and one handler. The CDB usage masks are what REPORT SUPPORTED
/// OPERATION CODES reports (SPC-4 §6.35.3): a 1 bit is a bit the command looks at.
/// </summary>
internal static class CommandTable
{
    public static readonly ScsiCommand[] All =
    [
        new(TestUnitReady, -1, "TEST UNIT READY", UnitCommands.TestUnitReady, ReservationClass.Allowed, CommandFlags.None, [0x00, 0, 0, 0, 0, 0x07]),
        new(RequestSense, -1, "REQUEST SENSE", UnitCommands.RequestSense, ReservationClass.Allowed, CommandFlags.AnyLun, [0x03, 0x01, 0, 0, 0xff, 0x07]),
        new(Read6, -1, "READ(6)", ReadWriteCommands.Read, ReservationClass.Read, CommandFlags.None, [0x08, 0x1f, 0xff, 0xff, 0xff, 0x07]),
        new(Write6, -1, "WRITE(6)", ReadWriteCommands.Write, ReservationClass.Write, CommandFlags.WritesMedium, [0x0a, 0x1f, 0xff, 0xff, 0xff, 0x07]),
        new(Inquiry, -1, "INQUIRY", InquiryCommand.Execute, ReservationClass.Allowed, CommandFlags.AnyLun, [0x12, 0x01, 0xff, 0xff, 0xff, 0x07]),
        new(ModeSelect6, -1, "MODE SELECT(6)", ModeCommands.Select, ReservationClass.Write, CommandFlags.None, [0x15, 0x11, 0, 0, 0xff, 0x07]),
        new(Reserve6, -1, "RESERVE(6)", ReserveCommands.Reserve, ReservationClass.Allowed, CommandFlags.None, [0x16, 0, 0, 0, 0, 0x07]),
        new(Release6, -1, "RELEASE(6)", ReserveCommands.Release, ReservationClass.Allowed, CommandFlags.None, [0x17, 0, 0, 0, 0, 0x07]),
        new(ModeSense6, -1, "MODE SENSE(6)", ModeCommands.Sense, ReservationClass.Read, CommandFlags.None, [0x1a, 0x08, 0xff, 0xff, 0xff, 0x07]),
        new(StartStopUnit, -1, "START STOP UNIT", UnitCommands.StartStop, ReservationClass.Write, CommandFlags.None, [0x1b, 0x01, 0, 0x0f, 0xf7, 0x07]),
        new(PreventAllowMediumRemoval, -1, "PREVENT ALLOW MEDIUM REMOVAL", UnitCommands.PreventAllow, ReservationClass.Allowed, CommandFlags.None, [0x1e, 0, 0, 0, 0x03, 0x07]),
        new(ReadCapacity10, -1, "READ CAPACITY(10)", CapacityCommands.ReadCapacity10, ReservationClass.Allowed, CommandFlags.None, [0x25, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0x01, 0x07]),
        new(Read10, -1, "READ(10)", ReadWriteCommands.Read, ReservationClass.Read, CommandFlags.None, [0x28, 0xfa, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0x07]),
        new(Write10, -1, "WRITE(10)", ReadWriteCommands.Write, ReservationClass.Write, CommandFlags.WritesMedium, [0x2a, 0xfa, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0x07]),
        new(WriteAndVerify10, -1, "WRITE AND VERIFY(10)", ReadWriteCommands.Write, ReservationClass.Write, CommandFlags.WritesMedium, [0x2e, 0xf2, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0x07]),
        new(Verify10, -1, "VERIFY(10)", VerifyCommands.Verify, ReservationClass.Read, CommandFlags.None, [0x2f, 0xf6, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0x07]),
        new(PreFetch10, -1, "PRE-FETCH(10)", VerifyCommands.PreFetch, ReservationClass.Read, CommandFlags.None, [0x34, 0x02, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0x07]),
        new(SynchronizeCache10, -1, "SYNCHRONIZE CACHE(10)", UnitCommands.SynchronizeCache, ReservationClass.Write, CommandFlags.None, [0x35, 0x02, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0x07]),
        new(ReadDefectData10, -1, "READ DEFECT DATA(10)", UnitCommands.ReadDefectData, ReservationClass.Read, CommandFlags.None, [0x37, 0, 0x1f, 0, 0, 0, 0, 0xff, 0xff, 0x07]),
        new(WriteSame10, -1, "WRITE SAME(10)", WriteSameCommands.WriteSame, ReservationClass.Write, CommandFlags.WritesMedium, [0x41, 0xe8, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0x07]),
        new(Unmap, -1, "UNMAP", UnmapCommand.Execute, ReservationClass.Write, CommandFlags.WritesMedium, [0x42, 0, 0, 0, 0, 0, 0x1f, 0xff, 0xff, 0x07]),
        new(ModeSelect10, -1, "MODE SELECT(10)", ModeCommands.Select, ReservationClass.Write, CommandFlags.None, [0x55, 0x11, 0, 0, 0, 0, 0, 0xff, 0xff, 0x07]),
        new(Reserve10, -1, "RESERVE(10)", ReserveCommands.Reserve, ReservationClass.Allowed, CommandFlags.None, [0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0x07]),
        new(Release10, -1, "RELEASE(10)", ReserveCommands.Release, ReservationClass.Allowed, CommandFlags.None, [0x57, 0, 0, 0, 0, 0, 0, 0, 0, 0x07]),
        new(ModeSense10, -1, "MODE SENSE(10)", ModeCommands.Sense, ReservationClass.Read, CommandFlags.None, [0x5a, 0x18, 0xff, 0xff, 0, 0, 0, 0xff, 0xff, 0x07]),
        new(PersistentReserveIn, -1, "PERSISTENT RESERVE IN", ReserveCommands.PersistentReserveIn, ReservationClass.Allowed, CommandFlags.None, [0x5e, 0x1f, 0, 0, 0, 0, 0, 0xff, 0xff, 0x07]),
        new(PersistentReserveOut, -1, "PERSISTENT RESERVE OUT", ReserveCommands.PersistentReserveOut, ReservationClass.Allowed, CommandFlags.None, [0x5f, 0x1f, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x07]),
        new(Read16, -1, "READ(16)", ReadWriteCommands.Read, ReservationClass.Read, CommandFlags.None, [0x88, 0xfa, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x07]),
        new(CompareAndWrite, -1, "COMPARE AND WRITE", CompareAndWriteCommand.Execute, ReservationClass.Write, CommandFlags.WritesMedium, [0x89, 0xfa, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0xff, 0x1f, 0x07]),
        new(Write16, -1, "WRITE(16)", ReadWriteCommands.Write, ReservationClass.Write, CommandFlags.WritesMedium, [0x8a, 0xfa, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x07]),
        new(OrWrite16, -1, "ORWRITE(16)", ReadWriteCommands.OrWrite, ReservationClass.Write, CommandFlags.WritesMedium, [0x8b, 0xfa, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x07]),
        new(WriteAndVerify16, -1, "WRITE AND VERIFY(16)", ReadWriteCommands.Write, ReservationClass.Write, CommandFlags.WritesMedium, [0x8e, 0xf2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x07]),
        new(Verify16, -1, "VERIFY(16)", VerifyCommands.Verify, ReservationClass.Read, CommandFlags.None, [0x8f, 0xf6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x07]),
        new(PreFetch16, -1, "PRE-FETCH(16)", VerifyCommands.PreFetch, ReservationClass.Read, CommandFlags.None, [0x90, 0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x07]),
        new(SynchronizeCache16, -1, "SYNCHRONIZE CACHE(16)", UnitCommands.SynchronizeCache, ReservationClass.Write, CommandFlags.None, [0x91, 0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x07]),
        new(WriteSame16, -1, "WRITE SAME(16)", WriteSameCommands.WriteSame, ReservationClass.Write, CommandFlags.WritesMedium, [0x93, 0xe9, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x07]),
        new(WriteAtomic16, -1, "WRITE ATOMIC(16)", ReadWriteCommands.WriteAtomic, ReservationClass.Write, CommandFlags.WritesMedium, [0x9c, 0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0x07]),
        new(ServiceActionIn16, ReadCapacity16, "READ CAPACITY(16)", CapacityCommands.ReadCapacity16, ReservationClass.Allowed, CommandFlags.None, [0x9e, 0x1f, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0x07]),
        new(ServiceActionIn16, GetLbaStatus, "GET LBA STATUS", CapacityCommands.GetLbaStatus, ReservationClass.Read, CommandFlags.None, [0x9e, 0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0x07]),
        new(ReportLuns, -1, "REPORT LUNS", UnitCommands.ReportLuns, ReservationClass.Allowed, CommandFlags.AnyLun, [0xa0, 0, 0xff, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0x07]),
        new(MaintenanceIn, ReportSupportedOperationCodes, "REPORT SUPPORTED OPERATION CODES", SupportedCommands.ReportOpcodes, ReservationClass.Allowed, CommandFlags.None, [0xa3, 0x1f, 0x87, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0x07]),
        new(MaintenanceIn, ReportSupportedTaskManagementFunctions, "REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS", SupportedCommands.ReportTmfs, ReservationClass.Allowed, CommandFlags.None, [0xa3, 0x1f, 0x80, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0x07]),
        new(Read12, -1, "READ(12)", ReadWriteCommands.Read, ReservationClass.Read, CommandFlags.None, [0xa8, 0xfa, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x07]),
        new(Write12, -1, "WRITE(12)", ReadWriteCommands.Write, ReservationClass.Write, CommandFlags.WritesMedium, [0xaa, 0xfa, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x07]),
        new(WriteAndVerify12, -1, "WRITE AND VERIFY(12)", ReadWriteCommands.Write, ReservationClass.Write, CommandFlags.WritesMedium, [0xae, 0xf2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x07]),
        new(Verify12, -1, "VERIFY(12)", VerifyCommands.Verify, ReservationClass.Read, CommandFlags.None, [0xaf, 0xf6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x07]),
        new(ReadDefectData12, -1, "READ DEFECT DATA(12)", UnitCommands.ReadDefectData, ReservationClass.Read, CommandFlags.None, [0xb7, 0x1f, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0x07]),
    ];

    private static readonly ScsiCommand?[] ByOpcode = new ScsiCommand?[256];
    private static readonly ScsiCommand?[][] ByServiceAction = new ScsiCommand?[256][];

    static CommandTable()
    {
        foreach (var c in All)
        {
            if (c.HasServiceAction)
            {
                (ByServiceAction[c.Opcode] ??= new ScsiCommand?[32])[c.ServiceAction] = c;
            }
            else
            {
                ByOpcode[c.Opcode] = c;
            }
        }
    }

    /// <summary>True when the opcode carries a service action in CDB byte 1 (bits 4..0).</summary>
    public static bool UsesServiceAction(byte opcode) => ByServiceAction[opcode] != null;

    /// <summary>The command for a CDB, or null (INVALID COMMAND OPERATION CODE, or INVALID FIELD IN CDB for an unknown service action).</summary>
    public static ScsiCommand? Find(ReadOnlySpan<byte> cdb, out bool unknownServiceAction)
    {
        unknownServiceAction = false;
        var sa = ByServiceAction[cdb[0]];
        if (sa != null)
        {
            var c = sa[cdb[1] & 0x1f];
            unknownServiceAction = c is null;
            return c;
        }
        return ByOpcode[cdb[0]];
    }

    public static ScsiCommand? Find(byte opcode, int serviceAction) =>
        serviceAction >= 0 ? (serviceAction < 32 ? ByServiceAction[opcode]?[serviceAction] : null) : ByOpcode[opcode];
}
