namespace Ballast.Engine.Tests;

public class Crc32CTests
{
    [Test]
    public void Crc32C_matches_the_standard_check_value()
    {
        Assert.That(Crc32C.Compute("123456789"u8), Is.EqualTo(0xE3069283u));
    }

    [Test]
    public void Every_length_and_alignment_matches_a_bitwise_reference()
    {
        // Lengths around the 4 KiB stride of the four-lane path, and unaligned starts, where a
        // wrong shift table or lane offset would show.
        var data = TestPools.Pattern(5, 3 * 4096 + 64);
        int[] lengths = [0, 1, 7, 8, 9, 1023, 1024, 1025, 4095, 4096, 4097, 4104, 8191, 8192, 8200, 12288, 3 * 4096 + 17];
        foreach (var start in new[] { 0, 1, 3, 8, 13 })
        {
            foreach (var length in lengths)
            {
                var span = data.AsSpan(start, Math.Min(length, data.Length - start));
                Assert.That(Crc32C.Compute(span), Is.EqualTo(Reference(span)), $"start {start}, length {span.Length}");
            }
        }
    }

    [Test]
    public void Appending_in_pieces_equals_the_crc_of_the_whole()
    {
        var data = TestPools.Pattern(9, 64 << 10);
        var random = new Random(42);
        for (var round = 0; round < 200; round++)
        {
            var length = random.Next(data.Length + 1);
            var cut = random.Next(length + 1);
            var whole = Crc32C.Compute(data.AsSpan(0, length));
            var pieces = Crc32C.Append(Crc32C.Compute(data.AsSpan(0, cut)), data.AsSpan(cut, length - cut));
            Assert.That(pieces, Is.EqualTo(whole), $"round {round}: length {length}, cut at {cut}");
        }
    }

    private static uint Reference(ReadOnlySpan<byte> data)
    {
        var crc = ~0u;
        foreach (var b in data)
        {
            crc ^= b;
            for (var k = 0; k < 8; k++)
            {
                crc = (crc & 1) != 0 ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
            }
        }
        return ~crc;
    }
}
