namespace Ballast.Bench;

/// <summary>--name value pairs with typed defaults.</summary>
internal sealed class BenchArgs
{
    private readonly Dictionary<string, string> _values = new(StringComparer.Ordinal);

    public static BenchArgs Parse(string[] args)
    {
        var a = new BenchArgs();
        for (var i = 0; i + 1 < args.Length; i += 2)
        {
            if (!args[i].StartsWith("--", StringComparison.Ordinal))
            {
                throw new ArgumentException($"expected --name value, got {args[i]}");
            }
            a._values[args[i][2..]] = args[i + 1];
        }
        return a;
    }

    public string Get(string name, string fallback) => _values.TryGetValue(name, out var v) ? v : fallback;

    public double Get(string name, double fallback) =>
        _values.TryGetValue(name, out var v) ? double.Parse(v, System.Globalization.CultureInfo.InvariantCulture) : fallback;
}
