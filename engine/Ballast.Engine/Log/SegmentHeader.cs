using System.Buffers.Binary;

namespace Ballast.Engine.Log;

public enum SegmentKind : uint
{
    Log = 1,
    Checkpoint = 2,
}

/// <summary>
/// First block of every segment. The sequence number orders log segments; replay follows seal
/// records from one segment to the next and requires the exact sequence it expects, so a stale
/// header from an earlier use of the segment is never mistaken for the log's continuation.
/// </summary>
public readonly record struct SegmentHeader(SegmentKind Kind, Guid PoolId, int Index, ulong Seq)
{
    public const ulong Magic = 0x31_47_45_53_4C_4C_41_42; // "BALLSEG1"

    public void Encode(Span<byte> block)
    {
        block[..PoolLayout.BlockSize].Clear();
        BinaryPrimitives.WriteUInt64LittleEndian(block, Magic);
        BinaryPrimitives.WriteUInt32LittleEndian(block[12..], (uint)Kind);
        PoolId.TryWriteBytes(block[16..]);
        BinaryPrimitives.WriteInt32LittleEndian(block[32..], Index);
        BinaryPrimitives.WriteUInt64LittleEndian(block[40..], Seq);
        BinaryPrimitives.WriteUInt32LittleEndian(block[8..], Crc32C.Compute(block[..64]));
    }

    public static bool TryDecode(ReadOnlySpan<byte> block, out SegmentHeader header)
    {
        header = default;
        if (BinaryPrimitives.ReadUInt64LittleEndian(block) != Magic)
        {
            return false;
        }
        Span<byte> copy = stackalloc byte[64];
        block[..64].CopyTo(copy);
        var stored = BinaryPrimitives.ReadUInt32LittleEndian(copy[8..]);
        BinaryPrimitives.WriteUInt32LittleEndian(copy[8..], 0);
        if (Crc32C.Compute(copy) != stored)
        {
            return false;
        }
        header = new SegmentHeader(
            (SegmentKind)BinaryPrimitives.ReadUInt32LittleEndian(block[12..]),
            new Guid(block.Slice(16, 16)),
            BinaryPrimitives.ReadInt32LittleEndian(block[32..]),
            BinaryPrimitives.ReadUInt64LittleEndian(block[40..]));
        return true;
    }
}
