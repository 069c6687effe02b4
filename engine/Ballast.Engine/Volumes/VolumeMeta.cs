using System.Buffers.Binary;
using System.Text;

namespace Ballast.Engine.Volumes;

public enum VolumeKind : byte
{
    Volume = 1,
    Snapshot = 2,
}

[Flags]
public enum VolumeFlags : uint
{
    None = 0,
    ReadOnly = 1,
}

/// <summary>
/// The durable description of a volume or snapshot, as carried by create records and checkpoints.
/// For a snapshot, ParentId is its volume; for a clone, ParentId is the snapshot it started from.
/// </summary>
public sealed record VolumeMeta
{
    public const int MaxNameBytes = 200;

    public required uint Id { get; init; }
    public required VolumeKind Kind { get; init; }
    public required string Name { get; init; }
    public uint ParentId { get; init; }
    public required Guid Uid { get; init; }
    public required long Size { get; init; }
    public required int LogicalBlockSize { get; init; }
    public VolumeFlags Flags { get; init; }
    public long CreatedUnixMs { get; init; }
    /// <summary>LSN the volume starts from (a clone continues from its snapshot's LSN).</summary>
    public long BaseLsn { get; init; }
    public uint Epoch { get; init; }

    public int EncodedLength => 64 + Encoding.UTF8.GetByteCount(Name);

    public void Encode(Span<byte> d)
    {
        var name = Encoding.UTF8.GetBytes(Name);
        BinaryPrimitives.WriteUInt32LittleEndian(d, Id);
        d[4] = (byte)Kind;
        d[5] = 0;
        BinaryPrimitives.WriteUInt16LittleEndian(d[6..], (ushort)name.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(d[8..], ParentId);
        BinaryPrimitives.WriteUInt32LittleEndian(d[12..], (uint)Flags);
        Uid.TryWriteBytes(d[16..]);
        BinaryPrimitives.WriteInt64LittleEndian(d[32..], Size);
        BinaryPrimitives.WriteInt32LittleEndian(d[40..], LogicalBlockSize);
        BinaryPrimitives.WriteUInt32LittleEndian(d[44..], Epoch);
        BinaryPrimitives.WriteInt64LittleEndian(d[48..], CreatedUnixMs);
        BinaryPrimitives.WriteInt64LittleEndian(d[56..], BaseLsn);
        name.CopyTo(d[64..]);
    }

    public byte[] Encode()
    {
        var b = new byte[EncodedLength];
        Encode(b);
        return b;
    }

    /// <summary>Decodes and validates; throws <see cref="InvalidDataException"/> on anything out of range.</summary>
    public static VolumeMeta Decode(ReadOnlySpan<byte> d, out int length)
    {
        if (d.Length < 64)
        {
            throw new InvalidDataException("volume metadata truncated");
        }
        var nameLen = BinaryPrimitives.ReadUInt16LittleEndian(d[6..]);
        if (nameLen == 0 || nameLen > MaxNameBytes || 64 + nameLen > d.Length)
        {
            throw new InvalidDataException($"volume name length {nameLen} out of range");
        }
        length = 64 + nameLen;
        var kind = (VolumeKind)d[4];
        var lbs = BinaryPrimitives.ReadInt32LittleEndian(d[40..]);
        var size = BinaryPrimitives.ReadInt64LittleEndian(d[32..]);
        if (kind is not (VolumeKind.Volume or VolumeKind.Snapshot) || lbs is not (512 or 4096) || size < 0 || size % lbs != 0)
        {
            throw new InvalidDataException("volume metadata fields out of range");
        }
        return new VolumeMeta
        {
            Id = BinaryPrimitives.ReadUInt32LittleEndian(d),
            Kind = kind,
            Name = Encoding.UTF8.GetString(d.Slice(64, nameLen)),
            ParentId = BinaryPrimitives.ReadUInt32LittleEndian(d[8..]),
            Flags = (VolumeFlags)BinaryPrimitives.ReadUInt32LittleEndian(d[12..]),
            Uid = new Guid(d.Slice(16, 16)),
            Size = size,
            LogicalBlockSize = lbs,
            Epoch = BinaryPrimitives.ReadUInt32LittleEndian(d[44..]),
            CreatedUnixMs = BinaryPrimitives.ReadInt64LittleEndian(d[48..]),
            BaseLsn = BinaryPrimitives.ReadInt64LittleEndian(d[56..]),
        };
    }
}
