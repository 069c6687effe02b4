using System.Buffers.Binary;

namespace Ballast.Iscsi.Pdu;

/// <summary>
/// The 48-byte Basic Header Segment (RFC 7143 §11.2.1): field offsets as in the spec and helpers
/// to read and write them in place. Every PDU starts with one; only the first 20 bytes and the
/// word layout are common, the rest is per opcode.
/// </summary>
internal static class Bhs
{
    public const int Length = 48;
    public const int DigestLength = 4;
    public const uint ReservedTag = 0xffffffff;

    // Common fields.
    public const int OpcodeByte = 0;
    public const byte ImmediateBit = 0x40;
    public const int FlagsByte = 1;
    public const byte FinalBit = 0x80;
    public const int TotalAhsLengthByte = 4;
    public const int DataSegmentLengthOffset = 5;
    public const int LunOffset = 8;
    public const int InitiatorTaskTagOffset = 16;

    // SCSI Command (§11.3).
    public const byte ReadBit = 0x40;
    public const byte WriteBit = 0x20;
    public const byte AttrMask = 0x07;
    public const int ExpectedDataTransferLengthOffset = 20;
    public const int CmdSnOffset = 24;
    public const int ExpStatSnOffset = 28;
    public const int CdbOffset = 32;
    public const int CdbLength = 16;

    // Target-to-initiator common.
    public const int TargetTransferTagOffset = 20;
    public const int StatSnOffset = 24;
    public const int ExpCmdSnOffset = 28;
    public const int MaxCmdSnOffset = 32;

    // SCSI Response (§11.4).
    public const byte ResidualOverflowBit = 0x04;
    public const byte ResidualUnderflowBit = 0x02;
    public const int ResponseByte = 2;
    public const int StatusByte = 3;
    public const int ExpDataSnOffset = 36;
    public const int BidiResidualOffset = 40;
    public const int ResidualCountOffset = 44;

    // Data-In / Data-Out / R2T (§11.7, §11.8).
    public const byte AckBit = 0x40;
    public const byte StatusBit = 0x01;
    public const int DataSnOffset = 36;
    public const int BufferOffsetOffset = 40;
    public const int R2TSnOffset = 36;
    public const int DesiredDataTransferLengthOffset = 44;

    // Task management (§11.5).
    public const byte FunctionMask = 0x7f;
    public const int ReferencedTaskTagOffset = 20;
    public const int RefCmdSnOffset = 32;

    // Login (§11.12, §11.13).
    public const byte TransitBit = 0x80;
    public const byte ContinueBit = 0x40;
    public const int VersionMaxByte = 2;
    public const int VersionMinByte = 3;
    public const int IsidOffset = 8;
    public const int TsihOffset = 14;
    public const int CidOffset = 20;
    public const int StatusClassByte = 36;
    public const int StatusDetailByte = 37;

    // Logout (§11.14, §11.15).
    public const int Time2WaitOffset = 40;
    public const int Time2RetainOffset = 42;

    // Reject (§11.17).
    public const int ReasonByte = 2;

    // Asynchronous message (§11.9).
    public const int AsyncEventByte = 36;
    public const int Parameter3Offset = 42;

    public static Opcode GetOpcode(ReadOnlySpan<byte> h) => (Opcode)(h[OpcodeByte] & 0x3f);
    public static bool IsImmediate(ReadOnlySpan<byte> h) => (h[OpcodeByte] & ImmediateBit) != 0;
    public static byte Flags(ReadOnlySpan<byte> h) => h[FlagsByte];
    public static bool IsFinal(ReadOnlySpan<byte> h) => (h[FlagsByte] & FinalBit) != 0;
    public static int TotalAhsLength(ReadOnlySpan<byte> h) => h[TotalAhsLengthByte] * 4;
    public static int DataSegmentLength(ReadOnlySpan<byte> h) => (h[5] << 16) | (h[6] << 8) | h[7];
    public static ulong Lun(ReadOnlySpan<byte> h) => BinaryPrimitives.ReadUInt64BigEndian(h[LunOffset..]);
    public static uint Itt(ReadOnlySpan<byte> h) => BinaryPrimitives.ReadUInt32BigEndian(h[InitiatorTaskTagOffset..]);
    public static uint U32(ReadOnlySpan<byte> h, int offset) => BinaryPrimitives.ReadUInt32BigEndian(h[offset..]);
    public static ushort U16(ReadOnlySpan<byte> h, int offset) => BinaryPrimitives.ReadUInt16BigEndian(h[offset..]);

    /// <summary>Clears a header and sets opcode, flags and data segment length.</summary>
    public static void Init(Span<byte> h, Opcode opcode, byte flags, int dataSegmentLength)
    {
        h[..Length].Clear();
        h[OpcodeByte] = (byte)opcode;
        h[FlagsByte] = flags;
        SetDataSegmentLength(h, dataSegmentLength);
    }

    public static void SetDataSegmentLength(Span<byte> h, int length)
    {
        h[5] = (byte)(length >> 16);
        h[6] = (byte)(length >> 8);
        h[7] = (byte)length;
    }

    public static void SetU32(Span<byte> h, int offset, uint value) => BinaryPrimitives.WriteUInt32BigEndian(h[offset..], value);
    public static void SetU16(Span<byte> h, int offset, ushort value) => BinaryPrimitives.WriteUInt16BigEndian(h[offset..], value);
    public static void SetU64(Span<byte> h, int offset, ulong value) => BinaryPrimitives.WriteUInt64BigEndian(h[offset..], value);

    /// <summary>Data segments are padded to a multiple of 4 bytes (§11.2.1, "Data Segment").</summary>
    public static int Pad(int length) => (4 - (length & 3)) & 3;

    /// <summary>Bytes a PDU occupies on the wire after the header (and header digest).</summary>
    public static int WireDataLength(int dataLength, bool dataDigest) =>
        dataLength == 0 ? 0 : dataLength + Pad(dataLength) + (dataDigest ? DigestLength : 0);
}
