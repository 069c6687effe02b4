using System.Buffers.Binary;

namespace Ballast.Iscsi.Tests.Support;

/// <summary>CDB builders for tests.</summary>
public static class Cdb
{
    public static byte[] Read10(uint lba, ushort blocks, byte flags = 0) => [0x28, flags, (byte)(lba >> 24), (byte)(lba >> 16), (byte)(lba >> 8), (byte)lba, 0, (byte)(blocks >> 8), (byte)blocks, 0];
    public static byte[] Write10(uint lba, ushort blocks, byte flags = 0) => [0x2a, flags, (byte)(lba >> 24), (byte)(lba >> 16), (byte)(lba >> 8), (byte)lba, 0, (byte)(blocks >> 8), (byte)blocks, 0];

    public static byte[] Sixteen(byte opcode, ulong lba, uint blocks, byte flags = 0)
    {
        var c = new byte[16];
        c[0] = opcode;
        c[1] = flags;
        BinaryPrimitives.WriteUInt64BigEndian(c.AsSpan(2), lba);
        BinaryPrimitives.WriteUInt32BigEndian(c.AsSpan(10), blocks);
        return c;
    }

    public static byte[] Read16(ulong lba, uint blocks) => Sixteen(0x88, lba, blocks);
    public static byte[] Write16(ulong lba, uint blocks, byte flags = 0) => Sixteen(0x8a, lba, blocks, flags);
    public static byte[] WriteSame16(ulong lba, uint blocks, bool unmap) => Sixteen(0x93, lba, blocks, (byte)(unmap ? 0x08 : 0));

    public static byte[] CompareAndWrite(ulong lba, byte blocks)
    {
        var c = Sixteen(0x89, lba, 0);
        c[10] = c[11] = c[12] = 0;
        c[13] = blocks;
        return c;
    }

    public static byte[] Inquiry(bool evpd = false, byte page = 0, ushort alloc = 255) => [0x12, (byte)(evpd ? 1 : 0), page, (byte)(alloc >> 8), (byte)alloc, 0];
    public static byte[] ReadCapacity16() => [0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0];
    public static byte[] GetLbaStatus(ulong lba) { var c = Sixteen(0x9e, lba, 64); c[1] = 0x12; return c; }
    public static byte[] ModeSense6(byte page, byte pc = 0) => [0x1a, 0, (byte)((pc << 6) | page), 0, 255, 0];
    public static byte[] ModeSelect6(byte length) => [0x15, 0x10, 0, 0, length, 0];

    public static byte[] Unmap(ushort listLength) => [0x42, 0, 0, 0, 0, 0, 0, (byte)(listLength >> 8), (byte)listLength, 0];

    public static byte[] UnmapList(ulong lba, uint blocks)
    {
        var p = new byte[24];
        BinaryPrimitives.WriteUInt16BigEndian(p, 22);
        BinaryPrimitives.WriteUInt16BigEndian(p.AsSpan(2), 16);
        BinaryPrimitives.WriteUInt64BigEndian(p.AsSpan(8), lba);
        BinaryPrimitives.WriteUInt32BigEndian(p.AsSpan(16), blocks);
        return p;
    }

    public static byte[] PrOut(byte action, byte type = 0) => [0x5f, action, type, 0, 0, 0, 0, 0, 24, 0];

    public static byte[] PrOutData(ulong key, ulong saKey, bool aptpl = false)
    {
        var p = new byte[24];
        BinaryPrimitives.WriteUInt64BigEndian(p, key);
        BinaryPrimitives.WriteUInt64BigEndian(p.AsSpan(8), saKey);
        p[20] = (byte)(aptpl ? 1 : 0);
        return p;
    }

    public static byte[] PrIn(byte action, ushort alloc = 1024) => [0x5e, action, 0, 0, 0, 0, 0, (byte)(alloc >> 8), (byte)alloc, 0];
}
