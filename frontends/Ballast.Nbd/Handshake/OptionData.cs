using System.Buffers.Binary;
using System.Text;

namespace Ballast.Nbd.Handshake;

/// <summary>
/// A bounds-checked cursor over one option's data. Every read says whether the data held it,
/// so a length field that points past the end of the option is an error, never an overread.
/// </summary>
internal ref struct OptionData(ReadOnlySpan<byte> data)
{
    /// <summary>Strings in the protocol are at most 4096 bytes of UTF-8 without NUL.</summary>
    public const int MaxString = 4096;

    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);
    private readonly ReadOnlySpan<byte> _data = data;
    private int _pos;

    public readonly int Remaining => _data.Length - _pos;

    public bool TryU32(out uint value)
    {
        value = 0;
        if (Remaining < 4)
        {
            return false;
        }
        value = BinaryPrimitives.ReadUInt32BigEndian(_data[_pos..]);
        _pos += 4;
        return true;
    }

    public bool TryU16(out ushort value)
    {
        value = 0;
        if (Remaining < 2)
        {
            return false;
        }
        value = BinaryPrimitives.ReadUInt16BigEndian(_data[_pos..]);
        _pos += 2;
        return true;
    }

    /// <summary>Reads <paramref name="length"/> bytes as a protocol string; null problem on success.</summary>
    public bool TryString(uint length, out string value, out string? problem)
    {
        value = "";
        if (length > (uint)Remaining)
        {
            problem = $"a string of {length} bytes runs past the end of the option";
            return false;
        }
        var bytes = _data.Slice(_pos, (int)length);
        _pos += (int)length;
        return TryDecode(bytes, out value, out problem);
    }

    public static bool TryDecode(ReadOnlySpan<byte> bytes, out string value, out string? problem)
    {
        value = "";
        problem = null;
        if (bytes.Length > MaxString)
        {
            problem = $"a string of {bytes.Length} bytes is longer than the limit of {MaxString}";
            return false;
        }
        if (bytes.Contains((byte)0))
        {
            problem = "a string contains a NUL byte";
            return false;
        }
        try
        {
            value = StrictUtf8.GetString(bytes);
            return true;
        }
        catch (DecoderFallbackException)
        {
            problem = "a string is not valid UTF-8";
            return false;
        }
    }
}
