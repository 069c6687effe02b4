using System.Buffers.Binary;

namespace Ballast.Iscsi.Scsi;

/// <summary>SCSI status codes (SAM-5 §5.3).</summary>
internal static class ScsiStatus
{
    public const byte Good = 0x00;
    public const byte CheckCondition = 0x02;
    public const byte ConditionMet = 0x04;
    public const byte Busy = 0x08;
    public const byte ReservationConflict = 0x18;
    public const byte TaskSetFull = 0x28;
    public const byte TaskAborted = 0x40;
}

/// <summary>Sense keys (SPC-4 §4.5.6).</summary>
internal enum SenseKey : byte
{
    NoSense = 0x0,
    RecoveredError = 0x1,
    NotReady = 0x2,
    MediumError = 0x3,
    HardwareError = 0x4,
    IllegalRequest = 0x5,
    UnitAttention = 0x6,
    DataProtect = 0x7,
    AbortedCommand = 0xb,
    Miscompare = 0xe,
}

/// <summary>Additional sense code and qualifier pairs (SPC-4 Annex D), named as in the spec.</summary>
internal readonly record struct Asc(byte Code, byte Qualifier)
{
    public static readonly Asc NoAdditionalSense = new(0x00, 0x00);
    public static readonly Asc LogicalUnitNotReadyCauseNotReportable = new(0x04, 0x00);
    public static readonly Asc LogicalUnitNotAccessibleTargetPortInStandbyState = new(0x04, 0x0b);
    public static readonly Asc WriteError = new(0x0c, 0x00);
    public static readonly Asc InvalidFieldInInformationUnit = new(0x0e, 0x03);
    public static readonly Asc UnrecoveredReadError = new(0x11, 0x00);
    public static readonly Asc ParameterListLengthError = new(0x1a, 0x00);
    public static readonly Asc MiscompareDuringVerifyOperation = new(0x1d, 0x00);
    public static readonly Asc InvalidCommandOperationCode = new(0x20, 0x00);
    public static readonly Asc LogicalBlockAddressOutOfRange = new(0x21, 0x00);
    public static readonly Asc InvalidFieldInCdb = new(0x24, 0x00);
    public static readonly Asc LogicalUnitNotSupported = new(0x25, 0x00);
    public static readonly Asc InvalidFieldInParameterList = new(0x26, 0x00);
    public static readonly Asc InvalidReleaseOfPersistentReservation = new(0x26, 0x04);
    public static readonly Asc WriteProtected = new(0x27, 0x00);
    public static readonly Asc SpaceAllocationFailedWriteProtect = new(0x27, 0x07);
    public static readonly Asc PowerOnResetOrBusDeviceResetOccurred = new(0x29, 0x00);
    public static readonly Asc BusDeviceResetFunctionOccurred = new(0x29, 0x03);
    public static readonly Asc ModeParametersChanged = new(0x2a, 0x01);
    public static readonly Asc ReservationsPreempted = new(0x2a, 0x03);
    public static readonly Asc ReservationsReleased = new(0x2a, 0x04);
    public static readonly Asc RegistrationsPreempted = new(0x2a, 0x05);
    public static readonly Asc CapacityDataHasChanged = new(0x2a, 0x09);
    public static readonly Asc CommandsClearedByAnotherInitiator = new(0x2f, 0x00);
    public static readonly Asc SavingParametersNotSupported = new(0x39, 0x00);
    public static readonly Asc MediumNotPresent = new(0x3a, 0x00);
    public static readonly Asc InternalTargetFailure = new(0x44, 0x00);
    public static readonly Asc ProtocolServiceCrcError = new(0x47, 0x05);
    public static readonly Asc DataPhaseError = new(0x4b, 0x00);
    public static readonly Asc InsufficientRegistrationResources = new(0x55, 0x04);
}

/// <summary>Builds sense data in fixed (0x70, SPC-4 §4.5.3) or descriptor (0x72, §4.5.2) format.</summary>
internal static class Sense
{
    public const int MaxLength = 32;

    /// <summary>Writes sense data; returns its length.</summary>
    /// <param name="fieldPointer">For INVALID FIELD IN CDB: the CDB byte at fault, reported in the sense-key specific field (§4.5.2.4.2).</param>
    public static int Build(Span<byte> s, bool descriptorFormat, SenseKey key, Asc asc, ulong? information = null, int fieldPointer = -1)
    {
        s[..MaxLength].Clear();
        if (descriptorFormat)
        {
            s[0] = 0x72;
            s[1] = (byte)key;
            s[2] = asc.Code;
            s[3] = asc.Qualifier;
            var o = 8;
            if (information is { } info)
            {
                // Information sense data descriptor (§4.5.2.2).
                s[o] = 0x00;
                s[o + 1] = 0x0a;
                s[o + 2] = 0x80;
                BinaryPrimitives.WriteUInt64BigEndian(s[(o + 4)..], info);
                o += 12;
            }
            if (fieldPointer >= 0)
            {
                // Sense key specific descriptor (§4.5.2.4): SKSV, C/D=1 (the CDB), field pointer.
                s[o] = 0x02;
                s[o + 1] = 0x06;
                s[o + 4] = 0x80 | 0x40;
                BinaryPrimitives.WriteUInt16BigEndian(s[(o + 5)..], (ushort)fieldPointer);
                o += 8;
            }
            s[7] = (byte)(o - 8);
            return o;
        }
        s[0] = (byte)(0x70 | (information.HasValue ? 0x80 : 0));
        s[2] = (byte)key;
        if (information is { } i)
        {
            BinaryPrimitives.WriteUInt32BigEndian(s[3..], (uint)i);
        }
        s[7] = 10; // additional sense length
        s[12] = asc.Code;
        s[13] = asc.Qualifier;
        if (fieldPointer >= 0)
        {
            s[15] = 0x80 | 0x40;
            BinaryPrimitives.WriteUInt16BigEndian(s[16..], (ushort)fieldPointer);
        }
        return 18;
    }

    /// <summary>Reads key, ASC and ASCQ back from either format (for tests and REQUEST SENSE).</summary>
    public static (SenseKey Key, byte Asc, byte Ascq) Parse(ReadOnlySpan<byte> s)
    {
        if ((s[0] & 0x7f) is 0x72 or 0x73)
        {
            return ((SenseKey)(s[1] & 0x0f), s[2], s[3]);
        }
        return ((SenseKey)(s[2] & 0x0f), s[12], s[13]);
    }
}
