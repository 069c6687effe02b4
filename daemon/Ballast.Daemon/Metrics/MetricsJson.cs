namespace Ballast.Daemon.Metrics;

/// <summary>/metrics.json: the same samples as /metrics, grouped by metric name.</summary>
public static class MetricsJson
{
    public sealed record Point(IReadOnlyDictionary<string, string> Labels, double Value);

    public static IReadOnlyDictionary<string, IReadOnlyList<Point>> From(IReadOnlyList<Sample> samples) =>
        samples.GroupBy(s => s.Name, StringComparer.Ordinal).ToDictionary(
            g => g.Key,
            g => (IReadOnlyList<Point>)[.. g.Select(s => new Point(s.Labels.ToDictionary(l => l.Key, l => l.Value, StringComparer.Ordinal), s.Value))],
            StringComparer.Ordinal);
}
