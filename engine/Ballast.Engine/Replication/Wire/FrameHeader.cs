using System.Buffers.Binary;

namespace Ballast.Engine.Replication.Wire;

/// <summary>
/// The 32-byte header of every replication frame (little-endian): magic, version, type, flags,
/// payload length, volume handle, request id, and a CRC32C over the header (CRC field zero) and
/// the payload. A frame that fails its CRC or limits closes the connection.
/// </summary>
public struct FrameHeader
{
    public const int Size = 32;
    public const uint Magic = 0x424C5250; // "PRLB"
    public const byte Version = 1;
    /// <summary>Largest payload: a 1 MiB record plus its header, or a control message.</summary>
    public const int MaxPayload = (1 << 20) + 4096;

    public FrameType Type;
    public ushort Flags;
    public int Length;
    public uint Volume;
    public ulong Id;
    public uint Crc;

    public readonly bool IsResponse => ((byte)Type & (byte)FrameType.ResponseBit) != 0;

    public readonly FrameType RequestType => (FrameType)((byte)Type & 0x7F);

    /// <summary>Writes the header with the CRC of header and <paramref name="payload"/>.</summary>
    public readonly void Write(Span<byte> h, ReadOnlySpan<byte> payload)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(h, Magic);
        h[4] = Version;
        h[5] = (byte)Type;
        BinaryPrimitives.WriteUInt16LittleEndian(h[6..], Flags);
        BinaryPrimitives.WriteInt32LittleEndian(h[8..], Length);
        BinaryPrimitives.WriteUInt32LittleEndian(h[12..], Volume);
        BinaryPrimitives.WriteUInt64LittleEndian(h[16..], Id);
        BinaryPrimitives.WriteUInt32LittleEndian(h[24..], 0);
        BinaryPrimitives.WriteUInt32LittleEndian(h[28..], 0);
        var crc = Crc32C.Append(Crc32C.Compute(h[..Size]), payload);
        BinaryPrimitives.WriteUInt32LittleEndian(h[24..], crc);
    }

    /// <summary>Parses and checks the fixed fields; the CRC is checked once the payload is in.</summary>
    public static bool TryRead(ReadOnlySpan<byte> h, out FrameHeader header, out string? problem)
    {
        header = default;
        problem = null;
        if (BinaryPrimitives.ReadUInt32LittleEndian(h) != Magic || h[4] != Version)
        {
            problem = "not a replication frame (bad magic or version)";
            return false;
        }
        header.Type = (FrameType)h[5];
        header.Flags = BinaryPrimitives.ReadUInt16LittleEndian(h[6..]);
        header.Length = BinaryPrimitives.ReadInt32LittleEndian(h[8..]);
        header.Volume = BinaryPrimitives.ReadUInt32LittleEndian(h[12..]);
        header.Id = BinaryPrimitives.ReadUInt64LittleEndian(h[16..]);
        header.Crc = BinaryPrimitives.ReadUInt32LittleEndian(h[24..]);
        if (header.Length < 0 || header.Length > MaxPayload)
        {
            problem = $"frame payload of {header.Length} bytes (limit {MaxPayload})";
            return false;
        }
        return true;
    }

    /// <summary>True if the CRC matches header (with the CRC field zeroed) and payload.</summary>
    public static bool CheckCrc(Span<byte> h, ReadOnlySpan<byte> payload, uint crc)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(h[24..], 0);
        var ok = Crc32C.Append(Crc32C.Compute(h[..Size]), payload) == crc;
        BinaryPrimitives.WriteUInt32LittleEndian(h[24..], crc);
        return ok;
    }
}
