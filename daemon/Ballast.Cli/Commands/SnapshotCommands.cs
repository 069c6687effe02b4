using System.CommandLine;
using Ballast.Cli.Output;
using Ballast.Control;

namespace Ballast.Cli.Commands;

/// <summary>ballastctl snapshot create | list | delete.</summary>
public static class SnapshotCommands
{
    public static Command Build()
    {
        var snapshot = new Command("snapshot", "Read-only, instant snapshots of volumes (named volume@snapshot).");

        var volume = new Argument<string>("VOLUME");
        var name = new Argument<string>("NAME") { Description = "Snapshot name; the snapshot is VOLUME@NAME." };
        var create = new Command("create", "Take a snapshot now; it costs no time or space until the volume changes.") { volume, name };
        create.SetAction((r, ct) => CliContext.RunAsync(r,
            client => client.CreateSnapshotAsync(r.GetValue(volume)!, r.GetValue(name)!, ct),
            v => $"created snapshot {v.Name} of {v.Parent}, {Units.Bytes(v.Size)}"));
        snapshot.Subcommands.Add(create);

        var of = new Argument<string?>("VOLUME") { Description = "Only this volume's snapshots.", Arity = ArgumentArity.ZeroOrOne };
        var list = new Command("list", "List snapshots.") { of };
        list.SetAction((r, ct) => CliContext.RunAsync(r, client => client.ListSnapshotsAsync(r.GetValue(of), ct), Table));
        snapshot.Subcommands.Add(list);

        var full = new Argument<string>("SNAPSHOT") { Description = "volume@snapshot" };
        var force = new Option<bool>("--force") { Description = "Disconnect clients reading it." };
        var delete = new Command("delete", "Delete a snapshot; what only it kept is reclaimed.") { full, force };
        delete.SetAction((r, ct) => CliContext.RunAsync(r, async client =>
        {
            await client.DeleteSnapshotAsync(r.GetValue(full)!, r.GetValue(force), ct).ConfigureAwait(false);
            return new { deleted = r.GetValue(full) };
        }, _ => $"deleted snapshot {r.GetValue(full)}"));
        snapshot.Subcommands.Add(delete);
        return snapshot;
    }

    private static string Table(IReadOnlyList<VolumeDto> snaps)
    {
        if (snaps.Count == 0)
        {
            return "no snapshots";
        }
        var t = new Table("NAME", "VOLUME", "SIZE", "CREATED", "CLIENTS");
        foreach (var s in snaps)
        {
            t.Add(s.Name, s.Parent ?? "-", Units.Bytes(s.Size), s.Created.ToString("u", System.Globalization.CultureInfo.InvariantCulture), s.Clients.Count);
        }
        return t.ToString();
    }
}
