using System.Globalization;

namespace Ballast.Iscsi.Chap;

/// <summary>
/// Binary values in text keys (RFC 7143 §6.1 "binary-value"): <c>0x</c> + hex digits or <c>0b</c> +
/// base64. CHAP_C and CHAP_R are limited to 1024 decoded bytes here; anything that does not decode
/// is refused.
/// </summary>
internal static class ChapValue
{
    public const int MaxBytes = 1024;

    public static bool TryDecode(string text, out byte[] value)
    {
        value = [];
        if (text.Length < 3)
        {
            return false;
        }
        var body = text.AsSpan(2);
        if (text.StartsWith("0x", StringComparison.OrdinalIgnoreCase))
        {
            // Hex may have an odd number of digits: a leading 0 is implied.
            if (body.Length > 2 * MaxBytes)
            {
                return false;
            }
            var padded = (body.Length & 1) == 1 ? "0" + body.ToString() : body.ToString();
            try
            {
                value = Convert.FromHexString(padded);
            }
            catch (FormatException)
            {
                return false;
            }
            return true;
        }
        if (text.StartsWith("0b", StringComparison.OrdinalIgnoreCase))
        {
            if (body.Length > (MaxBytes + 2) / 3 * 4)
            {
                return false;
            }
            var buffer = new byte[(body.Length + 3) / 4 * 3];
            if (!Convert.TryFromBase64Chars(body, buffer, out var n))
            {
                return false;
            }
            value = buffer[..n];
            return n <= MaxBytes;
        }
        return false;
    }

    public static string EncodeHex(ReadOnlySpan<byte> value) => "0x" + Convert.ToHexStringLower(value);

    /// <summary>CHAP_I: a decimal (or hex) number 0..255.</summary>
    public static bool TryParseId(string text, out byte id)
    {
        id = 0;
        if (!Negotiation.Negotiator.Number(text, 0, 255, out var v))
        {
            return false;
        }
        id = (byte)v;
        return true;
    }

    public static string FormatId(byte id) => id.ToString(CultureInfo.InvariantCulture);
}
