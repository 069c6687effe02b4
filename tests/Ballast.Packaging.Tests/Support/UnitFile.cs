namespace Ballast.Packaging.Tests;

/// <summary>
/// The settings of a systemd unit file, read the way systemd reads them for what the tests
/// compare: "Key=value" lines per section, comments skipped, a key given twice keeps both values.
/// </summary>
public sealed class UnitFile
{
    private readonly List<(string Section, string Key, string Value)> _entries = [];

    public UnitFile(string path)
    {
        var section = "";
        foreach (var raw in File.ReadLines(path))
        {
            var line = raw.Trim();
            if (line.Length == 0 || line[0] is '#' or ';')
            {
                continue;
            }
            if (line[0] == '[')
            {
                section = line.Trim('[', ']');
                continue;
            }
            var eq = line.IndexOf('=', StringComparison.Ordinal);
            Assert.That(eq, Is.GreaterThan(0), $"{path}: not a Key=value line: {line}");
            _entries.Add((section, line[..eq].Trim(), line[(eq + 1)..].Trim()));
        }
    }

    /// <summary>Every value of the key in the section, in file order.</summary>
    public IReadOnlyList<string> All(string section, string key) =>
        [.. _entries.Where(e => e.Section == section && e.Key == key).Select(e => e.Value)];

    /// <summary>The [Service] value of a key that must be set exactly once.</summary>
    public string Service(string key)
    {
        var values = All("Service", key);
        Assert.That(values, Has.Count.EqualTo(1), $"{key}= in [Service]");
        return values[0];
    }
}
