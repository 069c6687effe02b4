namespace Ballast.Iscsi.Reservations;

/// <summary>Persistent reservation types (SPC-4 §6.16.3, Table 183).</summary>
internal enum ReservationType : byte
{
    WriteExclusive = 1,
    ExclusiveAccess = 3,
    WriteExclusiveRegistrantsOnly = 5,
    ExclusiveAccessRegistrantsOnly = 6,
    WriteExclusiveAllRegistrants = 7,
    ExclusiveAccessAllRegistrants = 8,
}

/// <summary>How a command is treated in the presence of a reservation (SPC-4 §5.13.1, Table 63; SBC-3 Table 13).</summary>
internal enum ReservationClass : byte
{
    /// <summary>Allowed whatever the reservation (INQUIRY, REPORT LUNS, PR IN/OUT, ...).</summary>
    Allowed,
    /// <summary>Reads medium: conflicts under Exclusive Access types for non-holders.</summary>
    Read,
    /// <summary>Changes medium or LU state: conflicts under every type for non-holders.</summary>
    Write,
}

internal static class ReservationTypes
{
    public static bool IsValid(byte t) => t is 1 or 3 or 5 or 6 or 7 or 8;

    public static bool AllRegistrants(ReservationType t) => t is ReservationType.WriteExclusiveAllRegistrants or ReservationType.ExclusiveAccessAllRegistrants;

    /// <summary>Registrants-only and all-registrants types let every registered I_T nexus through.</summary>
    public static bool RegistrantsAccess(ReservationType t) => t >= ReservationType.WriteExclusiveRegistrantsOnly;

    public static bool ExclusiveAccess(ReservationType t) => t is ReservationType.ExclusiveAccess or ReservationType.ExclusiveAccessRegistrantsOnly or ReservationType.ExclusiveAccessAllRegistrants;
}
