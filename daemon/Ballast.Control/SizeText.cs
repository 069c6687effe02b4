using System.Globalization;

namespace Ballast.Control;

/// <summary>Byte sizes as operators write them: 1GiB, 512MiB, 10G (binary units), or plain bytes.</summary>
public static class SizeText
{
    private static readonly (string Suffix, long Factor)[] Units =
    [
        ("TiB", 1L << 40), ("GiB", 1L << 30), ("MiB", 1L << 20), ("KiB", 1L << 10),
        ("TB", 1L << 40), ("GB", 1L << 30), ("MB", 1L << 20), ("KB", 1L << 10),
        ("T", 1L << 40), ("G", 1L << 30), ("M", 1L << 20), ("K", 1L << 10), ("B", 1),
    ];

    public static bool TryParse(string text, out long bytes) => Parse(text, out bytes) == null;

    /// <summary>
    /// Why <paramref name="text"/> is not a size, as the end of a sentence that starts with the
    /// text itself ("is 0; a size must be more than 0"), or null when it is one.
    /// </summary>
    public static string? Problem(string text) => Parse(text, out _);

    private static string? Parse(string text, out long bytes)
    {
        bytes = 0;
        var s = text.Trim();
        long factor = 1;
        foreach (var (suffix, f) in Units)
        {
            if (s.EndsWith(suffix, StringComparison.OrdinalIgnoreCase))
            {
                s = s[..^suffix.Length].Trim();
                factor = f;
                break;
            }
        }
        if (!decimal.TryParse(s, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out var n))
        {
            return "is not a size";
        }
        if (n == 0)
        {
            return "is 0; a size must be more than 0";
        }
        if (n > long.MaxValue / factor)
        {
            return "is too large";
        }
        var value = n * factor;
        if (value != decimal.Truncate(value))
        {
            return "is not a whole number of bytes";
        }
        bytes = (long)value;
        return null;
    }

    /// <summary>Shortest exact rendering with a binary unit (1 GiB, 1.5 GiB, 4096 B).</summary>
    public static string Format(long bytes)
    {
        foreach (var (suffix, f) in new[] { ("TiB", 1L << 40), ("GiB", 1L << 30), ("MiB", 1L << 20), ("KiB", 1L << 10) })
        {
            if (bytes >= f)
            {
                return $"{((double)bytes / f).ToString("0.##", CultureInfo.InvariantCulture)} {suffix}";
            }
        }
        return $"{bytes} B";
    }
}
