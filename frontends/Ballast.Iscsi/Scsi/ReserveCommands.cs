namespace Ballast.Iscsi.Scsi;

/// <summary>RESERVE/RELEASE(6/10) (SPC-2) and PERSISTENT RESERVE IN/OUT (SPC-4 §6.15, §6.16); state lives in <see cref="Reservations.PersistentReservations"/>.</summary>
internal static class ReserveCommands
{
    public static ValueTask Reserve(ScsiTask t)
    {
        if (t.Cdb[0] == ScsiOpcodes.Reserve10 ? (t.Cdb[1] & 0x03) != 0 : (t.Cdb[1] & 0x01) != 0)
        {
            t.InvalidFieldInCdb(); // third-party / extent reservations are not supported
            return default;
        }
        if (t.Lu.Reservations.LegacyReserve(t.Nexus!))
        {
            t.Good();
        }
        else
        {
            t.ReservationConflict();
        }
        return default;
    }

    public static ValueTask Release(ScsiTask t)
    {
        if (t.Lu.Reservations.LegacyRelease(t.Nexus!))
        {
            t.Good();
        }
        else
        {
            t.ReservationConflict();
        }
        return default;
    }

    public static ValueTask PersistentReserveIn(ScsiTask t)
    {
        t.Lu.Reservations.In(t);
        return default;
    }

    public static ValueTask PersistentReserveOut(ScsiTask t)
    {
        t.Lu.Reservations.Out(t);
        return default;
    }
}
