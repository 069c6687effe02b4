using System.Globalization;
using Ballast.Control;

namespace Ballast.Cli.Output;

/// <summary>Numbers as people read them: GiB not bytes, 12.3K IOPS, 1.2 MiB/s.</summary>
public static class Units
{
    public static string Bytes(long b) => SizeText.Format(b);

    public static string Rate(double bytesPerSecond) => bytesPerSecond < 1 ? "0" : SizeText.Format((long)bytesPerSecond) + "/s";

    public static string Count(double n) => n switch
    {
        < 1 => "0",
        < 1000 => n.ToString("0", CultureInfo.InvariantCulture),
        < 1_000_000 => (n / 1000).ToString("0.#", CultureInfo.InvariantCulture) + "K",
        _ => (n / 1_000_000).ToString("0.#", CultureInfo.InvariantCulture) + "M",
    };

    public static string Ago(DateTimeOffset since)
    {
        var d = DateTimeOffset.UtcNow - since;
        return d.TotalSeconds < 90 ? $"{d.TotalSeconds:0}s" : d.TotalMinutes < 90 ? $"{d.TotalMinutes:0}m" : d.TotalHours < 48 ? $"{d.TotalHours:0}h" : $"{d.TotalDays:0}d";
    }
}
