namespace Ballast.Iscsi.Scsi;

/// <summary>Operation codes (SPC-4 Annex D.3.1, SBC-3 §5), named as in the standards.</summary>
internal static class ScsiOpcodes
{
    public const byte TestUnitReady = 0x00;
    public const byte RequestSense = 0x03;
    public const byte Read6 = 0x08;
    public const byte Write6 = 0x0a;
    public const byte Inquiry = 0x12;
    public const byte ModeSelect6 = 0x15;
    public const byte Reserve6 = 0x16;
    public const byte Release6 = 0x17;
    public const byte ModeSense6 = 0x1a;
    public const byte StartStopUnit = 0x1b;
    public const byte PreventAllowMediumRemoval = 0x1e;
    public const byte ReadCapacity10 = 0x25;
    public const byte Read10 = 0x28;
    public const byte Write10 = 0x2a;
    public const byte WriteAndVerify10 = 0x2e;
    public const byte Verify10 = 0x2f;
    public const byte PreFetch10 = 0x34;
    public const byte SynchronizeCache10 = 0x35;
    public const byte ReadDefectData10 = 0x37;
    public const byte WriteSame10 = 0x41;
    public const byte Unmap = 0x42;
    public const byte ModeSelect10 = 0x55;
    public const byte Reserve10 = 0x56;
    public const byte Release10 = 0x57;
    public const byte ModeSense10 = 0x5a;
    public const byte PersistentReserveIn = 0x5e;
    public const byte PersistentReserveOut = 0x5f;
    public const byte Read16 = 0x88;
    public const byte CompareAndWrite = 0x89;
    public const byte Write16 = 0x8a;
    public const byte OrWrite16 = 0x8b;
    public const byte WriteAndVerify16 = 0x8e;
    public const byte Verify16 = 0x8f;
    public const byte PreFetch16 = 0x90;
    public const byte SynchronizeCache16 = 0x91;
    public const byte WriteAtomic16 = 0x9c;
    public const byte WriteSame16 = 0x93;
    public const byte ServiceActionIn16 = 0x9e;
    public const byte ReportLuns = 0xa0;
    public const byte MaintenanceIn = 0xa3;
    public const byte Read12 = 0xa8;
    public const byte Write12 = 0xaa;
    public const byte WriteAndVerify12 = 0xae;
    public const byte Verify12 = 0xaf;
    public const byte ReadDefectData12 = 0xb7;

    // Service actions.
    public const byte ReadCapacity16 = 0x10;
    public const byte GetLbaStatus = 0x12;
    public const byte ReportSupportedOperationCodes = 0x0c;
    public const byte ReportSupportedTaskManagementFunctions = 0x0d;
}
