using Ballast.Iscsi.Pdu;

namespace Ballast.Iscsi.Tests.Unit;

public class PduCodecTests
{
    [Test]
    public void Bhs_fields_round_trip_at_their_rfc_offsets()
    {
        var h = new byte[48];
        Bhs.Init(h, Opcode.ScsiResponse, Bhs.FinalBit | Bhs.ResidualUnderflowBit, 0x012345);
        Bhs.SetU32(h, Bhs.InitiatorTaskTagOffset, 0xdeadbeef);
        Bhs.SetU32(h, Bhs.StatSnOffset, 7);
        Bhs.SetU64(h, Bhs.LunOffset, LunAddress.Encode(3));
        Assert.Multiple(() =>
        {
            Assert.That(Bhs.GetOpcode(h), Is.EqualTo(Opcode.ScsiResponse));
            Assert.That(h[0], Is.EqualTo(0x21));
            Assert.That(Bhs.IsFinal(h), Is.True);
            Assert.That(Bhs.DataSegmentLength(h), Is.EqualTo(0x012345));
            Assert.That(h[5..8], Is.EqualTo(new byte[] { 0x01, 0x23, 0x45 }));
            Assert.That(Bhs.Itt(h), Is.EqualTo(0xdeadbeef));
            Assert.That(h[16..20], Is.EqualTo(new byte[] { 0xde, 0xad, 0xbe, 0xef }));
            Assert.That(Bhs.U32(h, 24), Is.EqualTo(7u));
            Assert.That(LunAddress.Decode(Bhs.Lun(h)), Is.EqualTo(3));
        });
    }

    [Test]
    public void Immediate_bit_and_ahs_length_are_decoded()
    {
        var h = new byte[48];
        h[0] = 0x40 | 0x01;
        h[4] = 5;
        Assert.Multiple(() =>
        {
            Assert.That(Bhs.IsImmediate(h), Is.True);
            Assert.That(Bhs.GetOpcode(h), Is.EqualTo(Opcode.ScsiCommand));
            Assert.That(Bhs.TotalAhsLength(h), Is.EqualTo(20));
        });
    }

    [TestCase(0, 0)]
    [TestCase(1, 3)]
    [TestCase(2, 2)]
    [TestCase(3, 1)]
    [TestCase(4, 0)]
    [TestCase(8193, 3)]
    public void Data_segments_are_padded_to_four_bytes(int length, int pad) => Assert.That(Bhs.Pad(length), Is.EqualTo(pad));

    [Test]
    public void Wire_length_counts_padding_and_data_digest()
    {
        Assert.Multiple(() =>
        {
            Assert.That(Bhs.WireDataLength(0, true), Is.Zero);
            Assert.That(Bhs.WireDataLength(5, false), Is.EqualTo(8));
            Assert.That(Bhs.WireDataLength(5, true), Is.EqualTo(12));
        });
    }

    // RFC 3720 Appendix B.4 (carried into RFC 7143): CRC32C test vectors, as iSCSI sends them.
    [Test]
    public void Crc32c_matches_the_rfc_test_vectors()
    {
        var zeros = new byte[32];
        var ones = Enumerable.Repeat((byte)0xff, 32).ToArray();
        var up = Enumerable.Range(0, 32).Select(i => (byte)i).ToArray();
        var down = Enumerable.Range(0, 32).Select(i => (byte)(31 - i)).ToArray();
        Assert.Multiple(() =>
        {
            Assert.That(Digest.Compute(zeros), Is.EqualTo(0x8a9136aau));
            Assert.That(Digest.Compute(ones), Is.EqualTo(0x62a8ab43u));
            Assert.That(Digest.Compute(up), Is.EqualTo(0x46dd794eu));
            Assert.That(Digest.Compute(down), Is.EqualTo(0x113fdb5cu));
        });
        var wire = new byte[4];
        Digest.Write(wire, Digest.Compute(zeros));
        Assert.That(wire, Is.EqualTo(new byte[] { 0xaa, 0x36, 0x91, 0x8a }), "sent least significant byte first");
    }

    [Test]
    public void Data_digest_covers_the_padding()
    {
        var data = new byte[] { 1, 2, 3, 4, 5 };
        var padded = new byte[] { 1, 2, 3, 4, 5, 0, 0, 0 };
        Assert.That(Digest.OfData(data), Is.EqualTo(Digest.Compute(padded)));
    }

    [TestCase(0)]
    [TestCase(1)]
    [TestCase(255)]
    [TestCase(256)]
    [TestCase(16383)]
    public void Lun_addresses_round_trip(int lun) => Assert.That(LunAddress.Decode(LunAddress.Encode(lun)), Is.EqualTo(lun));

    [Test]
    public void Lun_address_forms_we_do_not_serve_decode_as_invalid()
    {
        Assert.Multiple(() =>
        {
            Assert.That(LunAddress.Decode(0x0001_0000_0000_0001), Is.EqualTo(-1), "bytes past the first level");
            Assert.That(LunAddress.Decode(0x8000_0000_0000_0000), Is.EqualTo(-1), "logical unit addressing");
            Assert.That(LunAddress.Decode(0x0100_0000_0000_0000), Is.EqualTo(-1), "bus number");
        });
    }
}
