using System.Text;

namespace Ballast.Iscsi.Negotiation;

/// <summary>
/// The text format of Login and Text PDUs (RFC 7143 §6.1): <c>key=value</c> pairs, each ended by
/// a NUL byte, UTF-8. Keys are at most 63 bytes; a pair may be at most 8192 bytes (values of most
/// keys are limited further to 255 bytes by <see cref="Negotiator"/>).
/// </summary>
internal static class TextKeys
{
    public const int MaxKeyLength = 63;
    public const int MaxPairLength = 8192;

    public const string NotUnderstood = "NotUnderstood";
    public const string Irrelevant = "Irrelevant";
    public const string Reject = "Reject";

    /// <summary>Parses pairs; false with a reason for a malformed or oversized pair.</summary>
    public static bool TryParse(ReadOnlySpan<byte> data, List<KeyValuePair<string, string>> pairs, out string? error)
    {
        error = null;
        while (data.Length > 0)
        {
            var end = data.IndexOf((byte)0);
            if (end < 0)
            {
                // A final pair must end with NUL too; tolerate trailing padding of zeroes only.
                error = "text data does not end with a NUL";
                return false;
            }
            var pair = data[..end];
            data = data[(end + 1)..];
            if (pair.Length == 0)
            {
                continue; // padding or an empty string
            }
            if (pair.Length > MaxPairLength)
            {
                error = $"a key=value pair is {pair.Length} bytes (more than {MaxPairLength})";
                return false;
            }
            var eq = pair.IndexOf((byte)'=');
            if (eq <= 0)
            {
                error = "a text pair has no key or no '='";
                return false;
            }
            if (eq > MaxKeyLength)
            {
                error = $"a key is {eq} bytes (more than {MaxKeyLength})";
                return false;
            }
            string key, value;
            try
            {
                key = Strict.GetString(pair[..eq]);
                value = Strict.GetString(pair[(eq + 1)..]);
            }
            catch (DecoderFallbackException)
            {
                error = "a text pair is not valid UTF-8";
                return false;
            }
            pairs.Add(new KeyValuePair<string, string>(key, value));
        }
        return true;
    }

    private static readonly UTF8Encoding Strict = new(false, true);

    public static void Append(List<byte> output, string key, string value)
    {
        output.AddRange(Encoding.UTF8.GetBytes(key));
        output.Add((byte)'=');
        output.AddRange(Encoding.UTF8.GetBytes(value));
        output.Add(0);
    }
}
