using System.Buffers.Binary;

namespace Ballast.Iscsi.Pdu;

/// <summary>
/// iSCSI CRC32C digests (RFC 7143 §13.1, Appendix B.4 test vectors): the standard Castagnoli CRC
/// (initial ~0, final inversion), sent least significant byte first. The data digest covers the
/// data segment and its padding.
/// </summary>
internal static class Digest
{
    public static uint Compute(ReadOnlySpan<byte> data) => Ballast.Engine.Crc32C.Compute(data);

    public static uint Begin() => ~0u;

    public static uint Update(uint running, ReadOnlySpan<byte> data) => Ballast.Engine.Crc32C.Update(running, data);

    public static uint End(uint running) => ~running;

    public static void Write(Span<byte> destination, uint crc) => BinaryPrimitives.WriteUInt32LittleEndian(destination, crc);

    public static uint Read(ReadOnlySpan<byte> source) => BinaryPrimitives.ReadUInt32LittleEndian(source);

    /// <summary>Digest of data plus its zero padding.</summary>
    public static uint OfData(ReadOnlySpan<byte> data)
    {
        var crc = Update(Begin(), data);
        var pad = Bhs.Pad(data.Length);
        if (pad != 0)
        {
            Span<byte> zeros = stackalloc byte[4];
            zeros.Clear();
            crc = Update(crc, zeros[..pad]);
        }
        return End(crc);
    }
}
