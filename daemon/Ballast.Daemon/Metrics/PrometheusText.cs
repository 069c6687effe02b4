using System.Globalization;
using System.Text;

namespace Ballast.Daemon.Metrics;

/// <summary>The Prometheus text exposition format (version 0.0.4): HELP and TYPE once per family.</summary>
public static class PrometheusText
{
    public const string ContentType = "text/plain; version=0.0.4; charset=utf-8";

    public static string Write(IReadOnlyList<Sample> samples)
    {
        var sb = new StringBuilder();
        var described = new HashSet<string>(StringComparer.Ordinal);
        // The format wants each family's lines together; keep the first-seen family order.
        var order = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var s in samples)
        {
            order.TryAdd(s.Kind == "histogram" ? Family(s.Name) : s.Name, order.Count);
        }
        foreach (var s in samples.OrderBy(x => order[x.Kind == "histogram" ? Family(x.Name) : x.Name]))
        {
            var family = s.Kind == "histogram" ? Family(s.Name) : s.Name;
            if (described.Add(family))
            {
                sb.Append("# HELP ").Append(family).Append(' ').Append(s.Help).Append('\n');
                sb.Append("# TYPE ").Append(family).Append(' ').Append(s.Kind).Append('\n');
            }
            sb.Append(s.Name);
            if (s.Labels.Count > 0)
            {
                sb.Append('{');
                for (var i = 0; i < s.Labels.Count; i++)
                {
                    if (i > 0)
                    {
                        sb.Append(',');
                    }
                    sb.Append(s.Labels[i].Key).Append("=\"").Append(Escape(s.Labels[i].Value)).Append('"');
                }
                sb.Append('}');
            }
            sb.Append(' ').Append(s.Value.ToString("G17", CultureInfo.InvariantCulture)).Append('\n');
        }
        return sb.ToString();
    }

    private static string Family(string name)
    {
        foreach (var suffix in new[] { "_bucket", "_sum", "_count" })
        {
            if (name.EndsWith(suffix, StringComparison.Ordinal))
            {
                return name[..^suffix.Length];
            }
        }
        return name;
    }

    private static string Escape(string v) => v.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\"", "\\\"", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal);
}
