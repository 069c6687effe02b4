using System.Text;

namespace Ballast.Cli.Output;

/// <summary>Left-aligned text columns, two spaces apart, header in capitals: what an operator scans.</summary>
public sealed class Table(params string[] headers)
{
    private readonly List<string[]> _rows = [];

    public Table Add(params object?[] cells)
    {
        _rows.Add([.. cells.Select(c => c?.ToString() ?? "-")]);
        return this;
    }

    public int Count => _rows.Count;

    public override string ToString()
    {
        var widths = headers.Select((h, i) => Math.Max(h.Length, _rows.Count == 0 ? 0 : _rows.Max(r => r[i].Length))).ToArray();
        var sb = new StringBuilder();
        Line(sb, headers, widths);
        foreach (var r in _rows)
        {
            Line(sb, r, widths);
        }
        return sb.ToString();
    }

    private static void Line(StringBuilder sb, string[] cells, int[] widths)
    {
        for (var i = 0; i < cells.Length; i++)
        {
            sb.Append(i == cells.Length - 1 ? cells[i] : cells[i].PadRight(widths[i] + 2));
        }
        sb.Append('\n');
    }
}
