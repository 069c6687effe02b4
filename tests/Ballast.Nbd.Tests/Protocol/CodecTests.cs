using Ballast.Engine.Volumes;
using Ballast.Nbd.Handshake;
using Ballast.Nbd.Protocol;

namespace Ballast.Nbd.Tests.Protocol;

/// <summary>The pieces that decode option data and map errors, without a socket.</summary>
public class CodecTests
{
    [Test]
    public void Option_data_reads_big_endian_fields_and_stops_at_the_end()
    {
        var d = new OptionData([0, 0, 0, 2, (byte)'v', (byte)'1', 0, 7]);
        Assert.That(d.TryU32(out var len), Is.True);
        Assert.That(len, Is.EqualTo(2));
        Assert.That(d.TryString(len, out var name, out var problem), Is.True, problem);
        Assert.That(name, Is.EqualTo("v1"));
        Assert.That(d.TryU16(out var n), Is.True);
        Assert.That(n, Is.EqualTo(7));
        Assert.That(d.Remaining, Is.Zero);
        Assert.That(d.TryU16(out _), Is.False);
        Assert.That(d.TryU32(out _), Is.False);
    }

    [Test]
    public void A_string_length_past_the_data_is_refused_without_reading_it()
    {
        var d = new OptionData([0, 0, 0, 200, 1, 2]);
        d.TryU32(out var len);
        Assert.That(d.TryString(len, out _, out var problem), Is.False);
        Assert.That(problem, Does.Contain("past the end"));
        var huge = new OptionData(new byte[8]);
        Assert.That(huge.TryString(uint.MaxValue, out _, out _), Is.False, "a 4 GiB length does not wrap");
    }

    [TestCase(new byte[] { 0x61, 0x00, 0x62 }, "NUL")]
    [TestCase(new byte[] { 0xc3, 0x28 }, "UTF-8")]
    public void Strings_with_NUL_or_bad_UTF8_are_refused(byte[] bytes, string why)
    {
        Assert.That(OptionData.TryDecode(bytes, out _, out var problem), Is.False);
        Assert.That(problem, Does.Contain(why));
    }

    [Test]
    public void Strings_longer_than_4096_bytes_are_refused()
    {
        Assert.That(OptionData.TryDecode(new byte[4096].Select(_ => (byte)'a').ToArray(), out _, out _), Is.True);
        Assert.That(OptionData.TryDecode(new byte[4097].Select(_ => (byte)'a').ToArray(), out _, out var problem), Is.False);
        Assert.That(problem, Does.Contain("4096"));
    }

    [TestCase(BlockError.OutOfRange, true, NbdErrno.ENoSpc)]
    [TestCase(BlockError.OutOfRange, false, NbdErrno.EInval)]
    [TestCase(BlockError.Overflow, true, NbdErrno.ENoSpc)]
    [TestCase(BlockError.ReadOnly, true, NbdErrno.EPerm)]
    [TestCase(BlockError.NoSpace, true, NbdErrno.ENoSpc)]
    [TestCase(BlockError.Io, false, NbdErrno.EIo)]
    [TestCase(BlockError.Gone, false, NbdErrno.EShutdown)]
    [TestCase(BlockError.Fenced, true, NbdErrno.EIo)]
    [TestCase(BlockError.InvalidArgument, false, NbdErrno.EInval)]
    public void Volume_errors_map_to_the_spec_error_values(BlockError error, bool write, uint expected) =>
        Assert.That(NbdErrno.From(error, write), Is.EqualTo(expected));
}
