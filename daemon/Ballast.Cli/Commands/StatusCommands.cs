using System.CommandLine;
using System.Text;
using Ballast.Cli.Output;
using Ballast.Control;

namespace Ballast.Cli.Commands;

/// <summary>ballastctl status and ballastctl export list.</summary>
public static class StatusCommands
{
    public static Command Status()
    {
        var c = new Command("status", "Pool capacity and use, cleaner activity, connections and per-volume I/O rates.");
        c.SetAction((r, ct) => CliContext.RunAsync(r, client => client.StatusAsync(ct), Human));
        return c;
    }

    private static string Human(StatusDto s)
    {
        var p = s.Pool;
        var sb = new StringBuilder();
        sb.Append(new Table("POOL", "")
            .Add("path", p.Path)
            .Add("health", p.Healthy ? "ok" : "FAILED: writes are refused after a device error (see the log)")
            .Add("capacity", Units.Bytes(p.Capacity))
            .Add("used", $"{Units.Bytes(p.Used)} ({100.0 * p.Used / Math.Max(1, p.Capacity):0.#}%): live {Units.Bytes(p.Live)}, reclaimable {Units.Bytes(p.Reclaimable)}")
            .Add("free", $"{Units.Bytes(p.Free)} ({p.FreeSegments} of {p.Segments} segments of {Units.Bytes(p.SegmentSize)})")
            .Add("cleaner", $"{p.CleanerPasses} passes, {p.CleanerSegmentsFreed} segments freed, {Units.Bytes(p.CleanerBytesMoved)} moved")
            .Add("write amplification", p.WriteAmplification.ToString("0.00", System.Globalization.CultureInfo.InvariantCulture))
            .Add("volumes", $"{s.Volumes} ({s.Snapshots} snapshots), {Units.Bytes(s.Provisioned)} provisioned ({(double)s.Provisioned / Math.Max(1, p.Capacity):0.##}x capacity)")
            .Add("clients", s.Clients.Count)
            .Add("ballastd", $"{s.Version}, up {Units.Ago(s.Started)}"));
        var t = new Table("VOLUME", "READ/S", "WRITE/S", "READ", "WRITE");
        foreach (var v in s.Rates)
        {
            t.Add(v.Volume, Units.Count(v.ReadIops), Units.Count(v.WriteIops), Units.Rate(v.ReadBytesPerSecond), Units.Rate(v.WriteBytesPerSecond));
        }
        if (t.Count > 0)
        {
            sb.Append('\n').Append(t);
        }
        return sb.ToString();
    }

    public static Command Exports()
    {
        var export = new Command("export", "How volumes are reachable.");
        var list = new Command("list", "Every export (NBD export names, iSCSI target IQNs and LUNs, addresses and portals) and the clients connected to it.");
        list.SetAction((r, ct) => CliContext.RunAsync(r, client => client.ExportsAsync(ct), x =>
        {
            var t = new Table("VOLUME", "PROTOCOL", "NAME", "ADDRESS", "CLIENTS");
            foreach (var e in x.Exports)
            {
                var volume = e.Volume ?? e.Name;
                var name = e.Lun is { } lun ? $"{e.Name} LUN {lun}" : e.Name;
                var clients = x.Clients.Where(c => c.Protocol == e.Protocol && c.Volume == volume && (c.Target == null || c.Target == e.Name))
                    .Select(c => c.Initiator != null ? $"{c.Initiator} ({c.Peer})" : c.Peer);
                foreach (var a in e.Addresses)
                {
                    t.Add(volume, e.Protocol, name, a, string.Join(", ", clients) is { Length: > 0 } s ? s : "-");
                }
            }
            return t.Count == 0 ? "nothing is exported (no volumes)" : t.ToString();
        }));
        export.Subcommands.Add(list);
        return export;
    }
}
