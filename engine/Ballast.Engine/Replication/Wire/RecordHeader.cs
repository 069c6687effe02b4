using System.Buffers.Binary;

namespace Ballast.Engine.Replication.Wire;

/// <summary>
/// The fixed part of Write, Zero, Trim and Resync frames (32 bytes): the record as the primary
/// logged it. Blocks of data follow for Write and data Resync frames.
/// </summary>
public struct RecordHeader
{
    public const int Size = 32;

    public long Lsn;
    public uint Epoch;
    public long Lba;
    public int Blocks;
    /// <summary>Bit 0 FUA; for Resync, bits 8-15 the record kind and bit 16 "replace unconditionally".</summary>
    public uint Flags;

    public const uint Fua = 1;
    public const uint Force = 1 << 16;

    public readonly void Write(Span<byte> b)
    {
        BinaryPrimitives.WriteInt64LittleEndian(b, Lsn);
        BinaryPrimitives.WriteUInt32LittleEndian(b[8..], Epoch);
        BinaryPrimitives.WriteInt64LittleEndian(b[12..], Lba);
        BinaryPrimitives.WriteInt32LittleEndian(b[20..], Blocks);
        BinaryPrimitives.WriteUInt32LittleEndian(b[24..], Flags);
        BinaryPrimitives.WriteUInt32LittleEndian(b[28..], 0);
    }

    public static bool TryRead(ReadOnlySpan<byte> b, out RecordHeader h)
    {
        h = default;
        if (b.Length < Size)
        {
            return false;
        }
        h.Lsn = BinaryPrimitives.ReadInt64LittleEndian(b);
        h.Epoch = BinaryPrimitives.ReadUInt32LittleEndian(b[8..]);
        h.Lba = BinaryPrimitives.ReadInt64LittleEndian(b[12..]);
        h.Blocks = BinaryPrimitives.ReadInt32LittleEndian(b[20..]);
        h.Flags = BinaryPrimitives.ReadUInt32LittleEndian(b[24..]);
        return h.Lsn >= 0 && h.Blocks > 0 && h.Lba >= 0;
    }
}
