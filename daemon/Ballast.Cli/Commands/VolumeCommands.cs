using System.CommandLine;
using System.Text;
using Ballast.Cli.Output;
using Ballast.Control;

namespace Ballast.Cli.Commands;

/// <summary>ballastctl volume create | list | inspect | resize | delete | clone | attach | verify | defragment.</summary>
public static class VolumeCommands
{
    public static Command Build()
    {
        var volume = new Command("volume", "Create, list, inspect, resize, clone and delete volumes.");
        volume.Subcommands.Add(Create());
        volume.Subcommands.Add(List());
        volume.Subcommands.Add(Inspect());
        volume.Subcommands.Add(Resize());
        volume.Subcommands.Add(Delete());
        volume.Subcommands.Add(Clone());
        volume.Subcommands.Add(Attach());
        volume.Subcommands.Add(Verify());
        volume.Subcommands.Add(Defragment());
        return volume;
    }

    private static Command Create()
    {
        var name = new Argument<string>("NAME") { Description = "1-64 characters from A-Z a-z 0-9 . _ -" };
        var size = new Option<string>("--size") { Description = "Size, like 10GiB.", Required = true, HelpName = "SIZE" };
        var block = new Option<int>("--block-size") { Description = "Logical block size clients see: 512 or 4096.", DefaultValueFactory = _ => 4096, HelpName = "BYTES" };
        var ro = new Option<bool>("--read-only") { Description = "Serve it read-only." };
        var replicas = new Option<int>("--replicas") { Description = "Copies on distinct nodes, this one the primary: 1, 2 or 3.", DefaultValueFactory = _ => 1, HelpName = "N" };
        var min = new Option<int?>("--min-replicas") { Description = "Copies that must take a write before it is acknowledged (default 1 for 1 replica, else N-1).", HelpName = "M" };
        var c = new Command("create", "Create a thin volume: no space is used until it is written. It is served at once.") { name, size, block, ro, replicas, min };
        c.SetAction((r, ct) => CliContext.RunAsync(r,
            async client =>
            {
                var v = await client.CreateVolumeAsync(new CreateVolumeRequest(r.GetValue(name)!, CliContext.ParseSize(r.GetValue(size)!, "--size"), r.GetValue(block), r.GetValue(ro),
                    r.GetValue(replicas), r.GetValue(min)), ct).ConfigureAwait(false);
                await WarnIfLargerThanPoolAsync(client, v, ct).ConfigureAwait(false);
                return v;
            },
            v => $"created volume {v.Name}, {Units.Bytes(v.Size)}{(v.Replicas != null ? $", {v.Replicas.Count} copies (min {v.MinReplicas})" : "")}\n{Exports(v)}"));
        return c;
    }

    // Volumes are thin, so this is allowed; an operator should still know before the pool fills.
    private static async Task WarnIfLargerThanPoolAsync(ControlClient client, VolumeDto v, CancellationToken ct)
    {
        var pool = (await client.StatusAsync(ct).ConfigureAwait(false)).Pool;
        var left = pool.Free + pool.Reclaimable;
        if (v.Size > left)
        {
            await Console.Error.WriteLineAsync(
                $"ballastctl: note: {v.Name} ({Units.Bytes(v.Size)}) is larger than the space its pool has left ({Units.Bytes(left)} of {Units.Bytes(pool.Capacity)}); " +
                "volumes are thin, and writes fail with \"pool full\" when the pool runs out").ConfigureAwait(false);
        }
    }

    private static Command List()
    {
        var c = new Command("list", "List the volumes with their size, snapshots, clients and I/O rates.");
        c.SetAction((r, ct) => CliContext.RunAsync(r, client => client.ListVolumesAsync(ct), ListTable));
        return c;
    }

    public static string ListTable(IReadOnlyList<VolumeDto> vs)
    {
        if (vs.Count == 0)
        {
            return "no volumes; ballastctl volume create NAME --size 10GiB makes one";
        }
        var t = new Table("NAME", "SIZE", "BLOCK", "MODE", "PARENT", "SNAPSHOTS", "CLIENTS", "READ/S", "WRITE/S", "READ", "WRITE");
        foreach (var v in vs)
        {
            t.Add(v.Name, Units.Bytes(v.Size), v.BlockSize, v.ReadOnly ? "ro" : "rw", v.Parent ?? "-", v.Snapshots.Count, v.Clients.Count,
                Units.Count(v.Io.ReadIops), Units.Count(v.Io.WriteIops), Units.Rate(v.Io.ReadBytesPerSecond), Units.Rate(v.Io.WriteBytesPerSecond));
        }
        return t.ToString();
    }

    private static Command Inspect()
    {
        var name = new Argument<string>("NAME") { Description = "A volume or snapshot (volume@snapshot)." };
        var c = new Command("inspect", "Everything about one volume: size, snapshots, exports, clients, I/O totals and rates.") { name };
        c.SetAction((r, ct) => CliContext.RunAsync(r, client => client.InspectAsync(r.GetValue(name)!, ct), Details));
        return c;
    }

    public static string Details(VolumeDto v)
    {
        var sb = new StringBuilder();
        var t = new Table("FIELD", "VALUE")
            .Add("name", v.Name)
            .Add("kind", v.Kind)
            .Add("size", $"{Units.Bytes(v.Size)} ({v.Size} bytes)")
            .Add("block size", v.BlockSize)
            .Add("mode", v.ReadOnly ? "read-only" : "read-write")
            .Add("parent", v.Parent ?? "-")
            .Add("created", v.Created.ToString("u", System.Globalization.CultureInfo.InvariantCulture))
            .Add("snapshots", v.Snapshots.Count == 0 ? "none" : string.Join(", ", v.Snapshots));
        if (v.Usage is { } u)
        {
            t.Add("data", u.DataRuns == 0 ? "none" : $"{Units.Bytes(u.DataBytes)} in {u.DataRuns} run{(u.DataRuns == 1 ? "" : "s")} on the device (average {Units.Bytes(u.DataBytes / u.DataRuns)})")
                .Add("zeroes", Units.Bytes(u.ZeroBytes));
        }
        t
            .Add("reads", $"{v.Io.Reads} ({Units.Bytes(v.Io.ReadBytes)}), now {Units.Count(v.Io.ReadIops)}/s {Units.Rate(v.Io.ReadBytesPerSecond)}")
            .Add("writes", $"{v.Io.Writes} ({Units.Bytes(v.Io.WriteBytes)}), now {Units.Count(v.Io.WriteIops)}/s {Units.Rate(v.Io.WriteBytesPerSecond)}")
            .Add("flushes", v.Io.Flushes)
            .Add("trims", $"{v.Io.Trims} ({Units.Bytes(v.Io.TrimBytes)})")
            .Add("errors", v.Io.Errors)
            .Add("in flight", v.Io.InFlight);
        sb.Append(t);
        if (v.Replicas is { Count: > 0 })
        {
            sb.Append('\n').Append(ReplicaTable(v.Replicas, v.MinReplicas));
        }
        sb.Append('\n').Append(Exports(v));
        if (v.Clients.Count > 0)
        {
            var ct = new Table("CLIENT", "PROTOCOL", "SINCE", "REQUESTS", "READ", "WRITTEN");
            foreach (var c in v.Clients)
            {
                ct.Add(c.Initiator != null ? $"{c.Initiator} ({c.Peer})" : c.Peer, c.Protocol, Units.Ago(c.Since), c.Requests, Units.Bytes(c.BytesRead), Units.Bytes(c.BytesWritten));
            }
            sb.Append('\n').Append(ct);
        }
        return sb.ToString();
    }

    public static string ReplicaTable(IReadOnlyList<ReplicaDto> replicas, int? min)
    {
        var t = new Table("NODE", "ROLE", "STATE", "LSN", "LAG", "RESYNC", "NOTE");
        foreach (var r in replicas)
        {
            var resync = r.ResyncPercent is { } p ? $"{p:0.#}%{(r.EtaSeconds is { } eta ? $", {eta:0}s left" : "")}" : "-";
            t.Add(r.Node, r.Role, r.State, r.Lsn, r.Lag, resync, r.Error ?? "-");
        }
        return (min != null ? $"copies: {replicas.Count}, writes need {min}\n" : "") + t;
    }

    private static Command Attach()
    {
        var name = new Argument<string>("NAME");
        var node = new Option<string>("--node") { Description = "The node to make primary: the one this ballastctl talks to (its id is checked).", HelpName = "ID" };
        var force = new Option<bool>("--force") { Description = "Attach without a majority of copies reachable, or on a copy that is behind (data only elsewhere is lost)." };
        var c = new Command("attach", "Make this node the volume's primary (failover): raises the epoch on every reachable copy so the old primary can no longer write.") { name, node, force };
        c.SetAction((r, ct) => CliContext.RunAsync(r,
            client => client.AttachAsync(r.GetValue(name)!, new AttachRequest(r.GetValue(node), r.GetValue(force)), ct),
            v => $"this node is now the primary of {v.Name}\n{(v.Replicas != null ? ReplicaTable(v.Replicas, v.MinReplicas) : "")}\n{Exports(v)}"));
        return c;
    }

    private static Command Verify()
    {
        var name = new Argument<string>("NAME");
        var c = new Command("verify", "Compare the checksums of every in-sync replica with the primary's copy; run it on the primary.") { name };
        c.SetAction(async (r, ct) =>
        {
            var differ = false;
            var code = await CliContext.RunAsync(r, client => client.VerifyAsync(r.GetValue(name)!, ct), v =>
            {
                differ = v.Differences.Count > 0;
                if (v.Differences.Count == 0)
                {
                    return $"volume {v.Volume}: every in-sync copy matches the primary\n{ReplicaTable(v.Replicas, null)}";
                }
                var t = new Table("NODE", "OFFSET", "LENGTH");
                foreach (var d in v.Differences)
                {
                    t.Add(d.Node, d.Offset, Units.Bytes(d.Length));
                }
                return $"volume {v.Volume}: {v.Differences.Count} range(s) differ\n{t}";
            }).ConfigureAwait(false);
            return code == ExitCodes.Ok && differ ? ExitCodes.Differ : code;
        });
        return c;
    }

    private static Command Defragment()
    {
        var name = new Argument<string>("NAME") { Description = "A volume or snapshot (VOLUME@SNAPSHOT)." };
        var rate = new Option<string?>("--rate") { Description = "Copy at most this much a second, like 100MiB, leaving more of the disk to clients (default: no limit).", HelpName = "SIZE" };
        var c = new Command("defragment", "Rewrite the volume's scattered data in volume order, so it reads in order at the disk's sequential speed. "
            + "Runs beside client I/O and waits until done (Ctrl-C stops it; what was moved stays moved). Needs free space for the data it moves; "
            + "the space of the old copies comes back through the cleaner. See the runs in volume inspect.") { name, rate };
        c.SetAction(async (r, ct) =>
        {
            DefragDto? done = null;
            var code = await CliContext.RunAsync(r, client => client.DefragmentAsync(r.GetValue(name)!,
                new DefragRequest(r.GetValue(rate) is { } limit ? CliContext.ParseSize(limit, "--rate") : null), ct), d =>
            {
                done = d;
                return $"volume {d.Volume}: rewrote {d.WindowsMoved} of {d.WindowsScanned} windows of {Units.Bytes(d.WindowBytes)} ({Units.Bytes(d.BytesMoved)}) in {d.Seconds:F1} s; "
                    + $"runs on the device {d.RunsBefore} -> {d.RunsAfter}"
                    + (d.Stopped != null ? $"\nstopped early: {d.Stopped}" : "");
            }).ConfigureAwait(false);
            // Stopped early is not done: scripts see it (7 when the pool ran short of space).
            return code != ExitCodes.Ok || done?.Stopped == null ? code : done.ShortOfSpace ? ExitCodes.NoSpace : ExitCodes.Failed;
        });
        return c;
    }

    private static string Exports(VolumeDto v)
    {
        if (v.Exports.Count == 0)
        {
            return "not served on this node (its primary serves it)";
        }
        var t = new Table("EXPORT", "NAME", "ADDRESS");
        foreach (var e in v.Exports)
        {
            foreach (var a in e.Addresses)
            {
                t.Add(e.Protocol, e.Lun is { } lun ? $"{e.Name} LUN {lun}" : e.Name, a);
            }
        }
        return t.ToString();
    }

    private static Command Resize()
    {
        var name = new Argument<string>("NAME");
        var size = new Option<string>("--size") { Description = "New size, like 20GiB.", Required = true, HelpName = "SIZE" };
        var force = new Option<bool>("--force") { Description = "Shrink even if data lies beyond the new end (that data is lost)." };
        var c = new Command("resize", "Grow a volume (or shrink it when nothing lies beyond the new end). Clients see the new size when they reconnect.") { name, size, force };
        c.SetAction((r, ct) => CliContext.RunAsync(r,
            client => client.ResizeAsync(r.GetValue(name)!, new ResizeVolumeRequest(CliContext.ParseSize(r.GetValue(size)!, "--size"), r.GetValue(force)), ct),
            v => $"volume {v.Name} is now {Units.Bytes(v.Size)}"));
        return c;
    }

    private static Command Delete()
    {
        var name = new Argument<string>("NAME");
        var force = new Option<bool>("--force") { Description = "Disconnect its clients and delete its snapshots too." };
        var c = new Command("delete", "Delete a volume; its space comes back as the cleaner runs. Refused while clients are connected or snapshots exist, unless --force.") { name, force };
        c.SetAction((r, ct) => CliContext.RunAsync(r, async client =>
        {
            await client.DeleteVolumeAsync(r.GetValue(name)!, r.GetValue(force), ct).ConfigureAwait(false);
            return new { deleted = r.GetValue(name) };
        }, _ => $"deleted volume {r.GetValue(name)}"));
        return c;
    }

    private static Command Clone()
    {
        var snapshot = new Argument<string>("SNAPSHOT") { Description = "volume@snapshot" };
        var newName = new Argument<string>("NEWNAME");
        var c = new Command("clone", "Make a writable volume from a snapshot, at once (it shares the snapshot's data until written).") { snapshot, newName };
        c.SetAction((r, ct) => CliContext.RunAsync(r,
            client => client.CloneAsync(r.GetValue(snapshot)!, r.GetValue(newName)!, ct),
            v => $"created volume {v.Name} from {v.Parent}, {Units.Bytes(v.Size)}\n{Exports(v)}"));
        return c;
    }
}
