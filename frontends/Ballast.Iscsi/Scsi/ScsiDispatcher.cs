using Ballast.Engine.Volumes;

namespace Ballast.Iscsi.Scsi;

/// <summary>
/// Runs a command through the checks every command gets, in SAM-5 order (LUN exists, unit
/// attention, opcode known, control byte, reservation conflict, write protection), then its
/// handler; maps volume errors to sense data.
/// </summary>
internal static class ScsiDispatcher
{
    public static ValueTask Execute(ScsiTask t)
    {
        var cmd = CommandTable.Find(t.Cdb, out var unknownServiceAction);
        var nexus = t.Nexus;
        if (nexus is null)
        {
            if (cmd != null && (cmd.Flags & CommandFlags.AnyLun) != 0)
            {
                return cmd.Handler(t);
            }
            t.IllegalRequest(Asc.LogicalUnitNotSupported);
            return default;
        }
        if ((cmd is null || (cmd.Flags & CommandFlags.AnyLun) == 0) && nexus.HasUnitAttention && nexus.TryTakeUnitAttention(out var ua))
        {
            t.CheckCondition(SenseKey.UnitAttention, ua);
            return default;
        }
        if (cmd is null)
        {
            if (unknownServiceAction)
            {
                t.InvalidFieldInCdb();
            }
            else
            {
                t.IllegalRequest(Asc.InvalidCommandOperationCode);
            }
            return default;
        }
        if ((t.Cdb[cmd.CdbLength - 1] & 0x04) != 0)
        {
            // NACA: auto contingent allegiance is not supported (SAM-5 §5.9.1.1).
            t.InvalidFieldInCdb();
            return default;
        }
        var lu = nexus.Lu;
        if (lu.Reservations.Conflicts(nexus, cmd.Reservation, cmd.Opcode))
        {
            t.ReservationConflict();
            return default;
        }
        if ((cmd.Flags & CommandFlags.WritesMedium) != 0 && lu.WriteProtected)
        {
            t.CheckCondition(SenseKey.DataProtect, Asc.WriteProtected);
            return default;
        }
        return cmd.Handler(t);
    }

    /// <summary>
    /// Volume errors as sense data (see <see cref="BlockError"/>):
    /// OutOfRange/Overflow: ILLEGAL REQUEST, LBA OUT OF RANGE; InvalidArgument: ILLEGAL REQUEST,
    /// INVALID FIELD IN CDB; ReadOnly: DATA PROTECT, WRITE PROTECTED; NoSpace: DATA PROTECT, SPACE
    /// ALLOCATION FAILED WRITE PROTECT; Io: MEDIUM ERROR, UNRECOVERED READ ERROR (reads) or WRITE
    /// ERROR (writes); Gone (volume deleted): ILLEGAL REQUEST, LOGICAL UNIT NOT SUPPORTED; Fenced
    /// (another node is primary): NOT READY, LOGICAL UNIT NOT ACCESSIBLE, TARGET PORT IN STANDBY
    /// STATE, which multipath initiators take as "use another path".
    /// </summary>
    public static void MapError(ScsiTask t, BlockError error, bool write)
    {
        switch (error)
        {
            case BlockError.OutOfRange:
            case BlockError.Overflow:
                t.CheckCondition(SenseKey.IllegalRequest, Asc.LogicalBlockAddressOutOfRange);
                break;
            case BlockError.InvalidArgument:
                t.CheckCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
                break;
            case BlockError.ReadOnly:
                t.CheckCondition(SenseKey.DataProtect, Asc.WriteProtected);
                break;
            case BlockError.NoSpace:
                t.CheckCondition(SenseKey.DataProtect, Asc.SpaceAllocationFailedWriteProtect);
                break;
            case BlockError.Io:
                t.CheckCondition(SenseKey.MediumError, write ? Asc.WriteError : Asc.UnrecoveredReadError);
                break;
            case BlockError.Gone:
                t.CheckCondition(SenseKey.IllegalRequest, Asc.LogicalUnitNotSupported);
                break;
            default:
                t.CheckCondition(SenseKey.NotReady, Asc.LogicalUnitNotAccessibleTargetPortInStandbyState);
                break;
        }
    }

    /// <summary>True for commands whose failures are write errors (MEDIUM ERROR / WRITE ERROR).</summary>
    public static bool IsWrite(byte opcode) => CommandTable.Find(opcode, -1) is { } c && (c.Flags & CommandFlags.WritesMedium) != 0;
}
