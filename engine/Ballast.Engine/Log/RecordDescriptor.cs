using System.Buffers.Binary;

namespace Ballast.Engine.Log;

/// <summary>
/// The fixed 48-byte part of a record in a batch header. On disk it is followed by one CRC32C per
/// payload block (data records) and by inline bytes (metadata records), padded to 8 bytes. The
/// record CRC covers the descriptor, the block CRCs and the inline bytes, so it covers the
/// payload too.
/// </summary>
public struct RecordDescriptor
{
    public const int Size = 48;

    public RecordKind Kind;
    public RecordFlags Flags;
    public ushort InlineLength;
    public uint VolumeId;
    public long Lsn;
    public uint Epoch;
    public int BlockCount;
    public long Lba;
    public int PayloadBlock;
    public uint Crc;
    public long Aux;

    public readonly int EncodedLength => Align8(Size + (Kind == RecordKind.Data ? 4 * BlockCount : 0) + InlineLength);

    public static int Align8(int n) => (n + 7) & ~7;

    public readonly void Write(Span<byte> d)
    {
        d[0] = (byte)Kind;
        d[1] = (byte)Flags;
        BinaryPrimitives.WriteUInt16LittleEndian(d[2..], InlineLength);
        BinaryPrimitives.WriteUInt32LittleEndian(d[4..], VolumeId);
        BinaryPrimitives.WriteInt64LittleEndian(d[8..], Lsn);
        BinaryPrimitives.WriteUInt32LittleEndian(d[16..], Epoch);
        BinaryPrimitives.WriteInt32LittleEndian(d[20..], BlockCount);
        BinaryPrimitives.WriteInt64LittleEndian(d[24..], Lba);
        BinaryPrimitives.WriteInt32LittleEndian(d[32..], PayloadBlock);
        BinaryPrimitives.WriteUInt32LittleEndian(d[36..], Crc);
        BinaryPrimitives.WriteInt64LittleEndian(d[40..], Aux);
    }

    public static RecordDescriptor Read(ReadOnlySpan<byte> d) => new()
    {
        Kind = (RecordKind)d[0],
        Flags = (RecordFlags)d[1],
        InlineLength = BinaryPrimitives.ReadUInt16LittleEndian(d[2..]),
        VolumeId = BinaryPrimitives.ReadUInt32LittleEndian(d[4..]),
        Lsn = BinaryPrimitives.ReadInt64LittleEndian(d[8..]),
        Epoch = BinaryPrimitives.ReadUInt32LittleEndian(d[16..]),
        BlockCount = BinaryPrimitives.ReadInt32LittleEndian(d[20..]),
        Lba = BinaryPrimitives.ReadInt64LittleEndian(d[24..]),
        PayloadBlock = BinaryPrimitives.ReadInt32LittleEndian(d[32..]),
        Crc = BinaryPrimitives.ReadUInt32LittleEndian(d[36..]),
        Aux = BinaryPrimitives.ReadInt64LittleEndian(d[40..]),
    };

    /// <summary>CRC over an encoded record (descriptor with its CRC field as zero, block CRCs, inline bytes).</summary>
    public static uint ComputeCrc(ReadOnlySpan<byte> encoded)
    {
        var crc = Crc32C.Update(~0u, encoded[..36]);
        crc = Crc32C.Update(crc, [0, 0, 0, 0]);
        return ~Crc32C.Update(crc, encoded[40..]);
    }
}
