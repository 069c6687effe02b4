using System.Text.Json;
using Ballast.Control;
using Ballast.Daemon.Hosting;
using Ballast.Daemon.Metrics;
using Ballast.Engine.Volumes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;

namespace Ballast.Daemon.Api;

/// <summary>
/// The control API: volumes, snapshots, clones, status and exports as HTTP/JSON. Every change
/// goes through the pool (logged durably before it is answered); the protocol servers look
/// volumes up per connection, so a new volume is served at once.
/// </summary>
public static class ControlApi
{
    public static void Map(IEndpointRouteBuilder app)
    {
        app.MapGet(Routes.Volumes, (PoolService p, ExportCatalog x, RateSampler r, ReplicationService repl) => Run(p, () =>
            Task.FromResult(Ok(p.Pool.ListVolumes().Where(v => v.Kind == VolumeKind.Volume).OrderBy(v => v.Name, StringComparer.Ordinal).Select(v => Dto(p, x, r, v, repl)).ToList()))));

        app.MapPost(Routes.Volumes, (HttpContext ctx, PoolService p, ExportCatalog x, RateSampler r, ReplicationService repl) => Run(p, async () =>
        {
            var req = await Body<CreateVolumeRequest>(ctx).ConfigureAwait(false);
            if (req.Replicas > 1)
            {
                var node = repl.Node ?? throw new InvalidOperationException("replication is off on this node: start ballastd with --node-id, --replication-listen and --node for each peer");
                if (req.ReadOnly)
                {
                    throw new ArgumentException("a replicated volume cannot be created read-only");
                }
                await node.CreateAsync(req.Name, req.Size, req.BlockSize, req.Replicas, req.MinReplicas ?? req.Replicas - 1).ConfigureAwait(false);
            }
            else
            {
                await p.Pool.CreateVolumeAsync(req.Name, req.Size, req.BlockSize, req.ReadOnly).ConfigureAwait(false);
            }
            return Results.Json(Dto(p, x, r, p.Pool.Describe(req.Name), repl), ControlClient.Json, statusCode: StatusCodes.Status201Created);
        }));

        app.MapPost(Routes.Volumes + "/{name}/attach", (string name, HttpContext ctx, PoolService p, ExportCatalog x, RateSampler r, ReplicationService repl) => Run(p, async () =>
        {
            var req = await Body<AttachRequest>(ctx).ConfigureAwait(false);
            var node = repl.Node ?? throw new InvalidOperationException("replication is off on this node");
            if (req.Node != null && req.Node != node.SelfId)
            {
                throw new ArgumentException($"this is node {node.SelfId}; run the attach against node {req.Node}'s ballastd (ballastctl --socket/--url)");
            }
            await node.AttachAsync(name, req.Force).ConfigureAwait(false);
            return Ok(Dto(p, x, r, p.Pool.Describe(name), repl));
        }));

        app.MapPost(Routes.Volumes + "/{name}/verify", (string name, PoolService p, ReplicationService repl) => Run(p, async () =>
        {
            var node = repl.Node ?? throw new InvalidOperationException("replication is off on this node: there is nothing to compare");
            p.Pool.Describe(name);
            var diffs = await node.VerifyAsync(name).ConfigureAwait(false);
            return Ok(new VerifyDto(name, Replicas(node, name) ?? [], [.. diffs.Select(d => new DifferenceDto(d.Node, d.Offset, d.Length))]));
        }));

        // Local to this node (each node lays its copy out itself); the client waits for the end,
        // and going away stops it (what was moved stays moved).
        app.MapPost(Routes.Volumes + "/{name}/defragment", (string name, HttpContext ctx, PoolService p) => Run(p, async () =>
        {
            var req = await Body<DefragRequest>(ctx).ConfigureAwait(false);
            if (req.RateBytesPerSecond is <= 0)
            {
                throw new ArgumentException("rateBytesPerSecond must be above 0 (leave it out for no limit)");
            }
            var sw = System.Diagnostics.Stopwatch.StartNew();
            var d = await p.Pool.DefragmentAsync(name, req.RateBytesPerSecond ?? 0, ctx.RequestAborted).ConfigureAwait(false);
            return Ok(new DefragDto(name, (long)Engine.Pool.DefragWindowBlocks * Engine.Log.PoolLayout.BlockSize, d.WindowsScanned, d.WindowsMoved,
                d.BlocksMoved * Engine.Log.PoolLayout.BlockSize, d.RunsBefore, d.RunsAfter,
                sw.Elapsed.TotalSeconds, d.StoppedBecause, d.ShortOfSpace));
        }));

        app.MapGet(Routes.Volumes + "/{name}", (string name, PoolService p, ExportCatalog x, RateSampler r, ReplicationService repl) => Run(p, () =>
            Task.FromResult(Ok(Dto(p, x, r, p.Pool.Describe(name), repl) with { Usage = Usage(p.Pool.GetUsage(name)) }))));

        app.MapPost(Routes.Volumes + "/{name}/resize", (string name, HttpContext ctx, PoolService p, ExportCatalog x, RateSampler r, ReplicationService repl) => Run(p, async () =>
        {
            var req = await Body<ResizeVolumeRequest>(ctx).ConfigureAwait(false);
            RequirePrimary(repl, name);
            await p.Pool.ResizeVolumeAsync(name, req.Size, req.Force).ConfigureAwait(false);
            await PassOnAsync(repl, name, new Engine.Replication.Wire.ControlRequest("resize", req.Size, Force: req.Force)).ConfigureAwait(false);
            return Ok(Dto(p, x, r, p.Pool.Describe(name), repl));
        }));

        app.MapDelete(Routes.Volumes + "/{name}", (string name, bool? force, PoolService p, ExportCatalog x, ReplicationService repl) => Run(p, () => DeleteAsync(p, x, repl, name, force == true, snapshot: false)));
        app.MapDelete(Routes.Snapshots + "/{name}", (string name, bool? force, PoolService p, ExportCatalog x, ReplicationService repl) => Run(p, () => DeleteAsync(p, x, repl, name, force == true, snapshot: true)));

        app.MapPost(Routes.Volumes + "/{name}/snapshots", (string name, HttpContext ctx, PoolService p, ExportCatalog x, RateSampler r, ReplicationService repl) => Run(p, async () =>
        {
            var req = await Body<CreateSnapshotRequest>(ctx).ConfigureAwait(false);
            RequirePrimary(repl, name);
            var snap = await p.Pool.CreateSnapshotAsync(name, req.Name).ConfigureAwait(false);
            await PassOnAsync(repl, name, new Engine.Replication.Wire.ControlRequest("snapshot", Snapshot: req.Name)).ConfigureAwait(false);
            return Results.Json(Dto(p, x, r, p.Pool.Describe(snap.Name)), ControlClient.Json, statusCode: StatusCodes.Status201Created);
        }));

        app.MapGet(Routes.Snapshots, (string? volume, PoolService p, ExportCatalog x, RateSampler r) => Run(p, () =>
        {
            if (volume != null)
            {
                p.Pool.Describe(volume);
            }
            return Task.FromResult(Ok(p.Pool.ListVolumes()
                .Where(v => v.Kind == VolumeKind.Snapshot && (volume == null || v.Parent == volume))
                .OrderBy(v => v.Name, StringComparer.Ordinal).Select(v => Dto(p, x, r, v)).ToList()));
        }));

        app.MapPost(Routes.Volumes + "/{name}/clone", (string name, HttpContext ctx, PoolService p, ExportCatalog x, RateSampler r) => Run(p, async () =>
        {
            var req = await Body<CloneRequest>(ctx).ConfigureAwait(false);
            await p.Pool.CloneAsync(name, req.Name).ConfigureAwait(false);
            return Results.Json(Dto(p, x, r, p.Pool.Describe(req.Name)), ControlClient.Json, statusCode: StatusCodes.Status201Created);
        }));

        app.MapGet(Routes.Status, (PoolService p, ExportCatalog x, RateSampler r, DaemonInfo info) => Run(p, () =>
        {
            var volumes = p.Pool.ListVolumes();
            return Task.FromResult(Ok(new StatusDto(info.Version, info.Started, PoolDto(p), volumes.Count(v => v.Kind == VolumeKind.Volume),
                volumes.Count(v => v.Kind == VolumeKind.Snapshot), x.Clients(), r.All, volumes.Where(v => v.Kind == VolumeKind.Volume).Sum(v => v.Size))));
        }));

        app.MapGet(Routes.Exports, (PoolService p, ExportCatalog x) => Run(p, () =>
            Task.FromResult(Ok(new ExportListDto([.. p.Pool.ListVolumes().OrderBy(v => v.Name, StringComparer.Ordinal).SelectMany(v => x.ExportsOf(v.Name))], x.Clients())))));
    }

    /// <summary>Lifecycle changes of a replicated volume are made on its primary and passed on to the in-sync replicas.</summary>
    private static void RequirePrimary(ReplicationService repl, string name)
    {
        var volume = name.Split('@')[0];
        if (repl.Node?.Info(volume) is { Role: Engine.Replication.Cluster.ReplicaRole.Replica } info)
        {
            throw new InvalidOperationException($"volume {volume} is replicated and node {info.Primary} is its primary; make this change there (or attach it here first)");
        }
    }

    private static async Task PassOnAsync(ReplicationService repl, string volume, Engine.Replication.Wire.ControlRequest request)
    {
        if (repl.Node is { } node && node.Info(volume) != null)
        {
            var failed = await node.ControlAsync(volume, request).ConfigureAwait(false);
            if (failed.Count > 0)
            {
                throw new InvalidOperationException($"done here, but not on replica(s) {string.Join(", ", failed)}");
            }
        }
    }

    private static async Task<IResult> DeleteAsync(PoolService p, ExportCatalog x, ReplicationService repl, string name, bool force, bool snapshot)
    {
        var info = p.Pool.Describe(name);
        RequirePrimary(repl, name);
        if (snapshot != (info.Kind == VolumeKind.Snapshot))
        {
            return ApiErrors.Error(StatusCodes.Status400BadRequest, ErrorCodes.Invalid,
                snapshot ? $"{name} is a volume, not a snapshot" : $"{name} is a snapshot, not a volume",
                snapshot ? "ballastctl volume delete deletes volumes" : "ballastctl snapshot delete deletes snapshots");
        }
        var names = new[] { name }.Concat(info.Snapshots).ToList();
        var clients = names.SelectMany(n => x.Clients(n).Select(c => (Export: n, Client: c))).ToList();
        if (clients.Count > 0 && !force)
        {
            // A snapshot's clients block the delete too (it goes with the volume): say whose they are.
            var who = string.Join(", ", clients.Select(e =>
                (e.Client.Initiator != null ? $"{e.Client.Protocol} {e.Client.Initiator} at {e.Client.Peer}" : $"{e.Client.Protocol} {e.Client.Peer}")
                + (e.Export == name ? "" : $" on snapshot {e.Export}")));
            var whose = clients.All(e => e.Export == name) ? name : clients.All(e => e.Export != name) ? $"{name}'s snapshots" : $"{name} and its snapshots";
            return ApiErrors.Error(StatusCodes.Status409Conflict, ErrorCodes.InUse,
                $"{whose} {(whose == name ? "has" : "have")} {clients.Count} connected client(s): {who}",
                "disconnect them first, or delete with --force to disconnect them");
        }
        if (info.Snapshots.Count > 0 && !force)
        {
            return ApiErrors.Error(StatusCodes.Status409Conflict, ErrorCodes.InUse,
                $"volume {name} has {info.Snapshots.Count} snapshot(s): {string.Join(", ", info.Snapshots)}",
                "delete the snapshots first, or delete with --force to delete them too");
        }
        foreach (var n in names)
        {
            x.Disconnect(n);
        }
        if (snapshot)
        {
            var at = name.IndexOf('@', StringComparison.Ordinal);
            await PassOnAsync(repl, name[..at], new Engine.Replication.Wire.ControlRequest("delete-snapshot", Snapshot: name[(at + 1)..])).ConfigureAwait(false);
        }
        else
        {
            await PassOnAsync(repl, name, new Engine.Replication.Wire.ControlRequest("delete")).ConfigureAwait(false);
        }
        await p.Pool.DeleteVolumeAsync(name, withSnapshots: force).ConfigureAwait(false);
        // An initiator that reconnected between the disconnect and the delete (open-iscsi and
        // qemu retry at once) holds a LUN that is gone; close it too. New logins find no target.
        foreach (var n in names)
        {
            x.Disconnect(n);
        }
        return Results.NoContent();
    }

    private static async Task<T> Body<T>(HttpContext ctx)
    {
        try
        {
            return await JsonSerializer.DeserializeAsync<T>(ctx.Request.Body, ControlClient.Json, ctx.RequestAborted).ConfigureAwait(false)
                ?? throw new ArgumentException("the request body is empty; it should be a JSON object");
        }
        catch (JsonException e)
        {
            throw new ArgumentException($"the request body is not the JSON this call takes: {e.Message}");
        }
    }

    private static IResult Ok(object value) => Results.Json(value, ControlClient.Json);

    private static async Task<IResult> Run(PoolService p, Func<Task<IResult>> action)
    {
        if (!p.IsOpen)
        {
            return ApiErrors.Error(StatusCodes.Status503ServiceUnavailable, ErrorCodes.Refused, "ballastd is starting or stopping", "try again in a moment");
        }
        try
        {
            return await action().ConfigureAwait(false);
        }
        catch (Exception e)
        {
            return ApiErrors.From(e);
        }
    }

    public static PoolDto PoolDto(PoolService p)
    {
        var s = p.Pool.GetStats();
        return new PoolDto(p.PoolPath, s.CapacityBytes, s.UsedBytes, s.LiveBytes, s.ReclaimableBytes, (long)s.FreeSegments * s.SegmentSize, s.SegmentSize, s.Segments,
            s.FreeSegments, s.WriteAmplification, s.CleanerPasses, s.CleanerSegmentsFreed, s.CleanerBytesMoved, s.Checkpoints, !s.Poisoned);
    }

    private static IReadOnlyList<ReplicaDto>? Replicas(Engine.Replication.ReplicationNode node, string name) =>
        node.Describe(name)?.Select(s => new ReplicaDto(s.Node, s.Role, s.State, s.Lsn, s.Lag, s.ResyncPercent, s.EtaSeconds, s.ResyncedBytes, s.Error)).ToList();

    private static VolumeUsageDto Usage(VolumeUsage u) => new(u.DataBytes, u.DataRuns, u.ZeroBytes);

    private static VolumeDto Dto(PoolService p, ExportCatalog x, RateSampler r, VolumeInfo v, ReplicationService repl)
    {
        var dto = Dto(p, x, r, v);
        if (repl.Node is { } node && v.Kind == VolumeKind.Volume && node.Info(v.Name) is { } info)
        {
            dto = dto with { Replicas = Replicas(node, v.Name), MinReplicas = info.MinReplicas };
        }
        return dto;
    }

    private static VolumeDto Dto(PoolService p, ExportCatalog x, RateSampler r, VolumeInfo v)
    {
        VolumeIoDto io;
        if (p.Pool.TryOpenVolume(v.Name, out var ev))
        {
            var c = ev.Counters;
            var rate = r.RateOf(v.Name);
            io = new VolumeIoDto(c.Reads, c.ReadBytes, c.Writes, c.WriteBytes, c.Flushes, c.Trims + c.Zeroes, c.TrimBytes + c.ZeroBytes, c.Errors, c.InFlight,
                rate.ReadIops, rate.WriteIops, rate.ReadBytesPerSecond, rate.WriteBytesPerSecond);
        }
        else
        {
            io = new VolumeIoDto(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
        }
        return new VolumeDto(v.Name, v.Kind == VolumeKind.Snapshot ? "snapshot" : "volume", v.Size, v.LogicalBlockSize, v.ReadOnly, v.Parent, v.Created, v.Lsn,
            v.Snapshots, io, x.ExportsOf(v.Name), x.Clients(v.Name));
    }
}

/// <summary>What status reports about the daemon itself.</summary>
public sealed record DaemonInfo(string Version, DateTimeOffset Started);
