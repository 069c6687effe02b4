using System.Net;
using System.Text.Json;
using Ballast.Engine.Replication.Cluster;
using Ballast.Engine.Replication.Primary;
using Ballast.Engine.Replication.Replica;
using Ballast.Engine.Replication.Transport;
using Ballast.Engine.Replication.Wire;
using Ballast.Engine.Volumes;

namespace Ballast.Engine.Replication;

/// <summary>Settings of this node's replication.</summary>
public sealed record ReplicationOptions
{
    public required string NodeId { get; init; }
    public required EndPoint Listen { get; init; }
    public required IMembership Membership { get; init; }
    /// <summary>The node's replication state file (replication.json in the data directory).</summary>
    public required string CatalogPath { get; init; }
    /// <summary>A replica that has not answered a request within this time is taken out of sync.</summary>
    public TimeSpan RequestTimeout { get; init; } = TimeSpan.FromSeconds(5);
    /// <summary>Resync copies at most this many bytes per second, so client I/O keeps its latency.</summary>
    public long ResyncBytesPerSecond { get; init; } = 64L << 20;
    public Action<PoolLogLevel, string>? Log { get; init; }
}

/// <summary>What one replica of a volume looks like for status and the CLI.</summary>
public sealed record ReplicaStatus(string Node, string Role, string State, long Lsn, long Lag, double? ResyncPercent, double? EtaSeconds, long ResyncedBytes, string? Error);

/// <summary>
/// Replication on this node: the listener replicas are reached on, links to peers, and for every
/// volume this node is primary of, the replicator that forwards its writes and resyncs its
/// replicas. Which node is primary is decided by epochs: a node taking over raises the epoch on
/// every reachable replica, and any copy that sees a higher epoch stops taking writes.
/// </summary>
public sealed class ReplicationNode : IAsyncDisposable
{
    internal static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    /// <summary>A new epoch starts this far above every LSN seen, so older primaries' LSNs never collide with it.</summary>
    public const long EpochLsnGap = 1L << 32;

    private readonly ReplicationOptions _options;
    private readonly Dictionary<string, PeerLink> _links = new(StringComparer.Ordinal);
    private readonly Dictionary<string, (VolumeReplicator Replicator, CancellationTokenSource Stop, Task Loop)> _primaries = new(StringComparer.Ordinal);
    private readonly SemaphoreSlim _changes = new(1, 1);
    private ReplicaServer? _server;
    private long _replicaFailures;
    private long _resyncBytes;

    public ReplicationNode(Pool pool, ReplicationOptions options)
    {
        Pool = pool;
        _options = options;
        Catalog = ReplicationCatalog.Load(options.CatalogPath);
    }

    public Pool Pool { get; }
    public ReplicationCatalog Catalog { get; }
    public string SelfId => _options.NodeId;
    public IMembership Membership => _options.Membership;
    public EndPoint? ListenEndpoint => _server?.Bound;
    public long ReplicaFailures => Interlocked.Read(ref _replicaFailures);
    public long ResyncBytes => Interlocked.Read(ref _resyncBytes);

    /// <summary>Raised when this node stops being a volume's primary (a newer one took over): its clients must go.</summary>
    public event Action<string>? VolumeDemoted;

    private void Log(PoolLogLevel level, string message) => _options.Log?.Invoke(level, message);

    internal void CountReplicaFailure() => Interlocked.Increment(ref _replicaFailures);

    internal void CountResyncBytes(long n) => Interlocked.Add(ref _resyncBytes, n);

    public async Task StartAsync()
    {
        _server = new ReplicaServer(this, _options.Listen, _options.Log);
        _server.Start();
        foreach (var info in Catalog.All)
        {
            if (info.Role != ReplicaRole.Primary)
            {
                continue;
            }
            if (!Pool.TryOpenVolume(info.Name, out var v))
            {
                Log(PoolLogLevel.Error, $"replication: volume {info.Name} is in the replication state but not in the pool; dropping it from the state");
                Catalog.Set(info.Name, null);
                continue;
            }
            // A restart may have lost records the replicas kept: start a new epoch above every LSN used so far,
            // so they reset such blocks to this copy's.
            var epoch = Math.Max(info.Epoch, v.Epoch) + 1;
            var start = Math.Max(v.Lsn, info.EpochStartLsn) + EpochLsnGap;
            await Pool.SetEpochAsync(info.Name, epoch).ConfigureAwait(false);
            Catalog.Set(info.Name, info.WithEpoch(epoch, v.Lsn, start) with { Primary = SelfId });
            StartPrimary(Catalog.Get(info.Name)!, v);
        }
    }

    private PeerLink Link(string node)
    {
        lock (_links)
        {
            if (_links.TryGetValue(node, out var l))
            {
                return l;
            }
            var peer = Membership.Find(node) ?? throw new InvalidOperationException($"node {node} is not in the membership (nodes in the config file)");
            l = new PeerLink(peer, SelfId, _options.RequestTimeout, _options.Log);
            l.Up += OnLinkUp;
            l.Down += OnLinkDown;
            _links[node] = l;
            l.Start();
            return l;
        }
    }

    private void OnLinkUp(PeerLink link)
    {
        lock (_primaries)
        {
            foreach (var (r, _, _) in _primaries.Values)
            {
                if (r.Targets.Any(t => t.Link == link))
                {
                    r.ResyncNeeded.Release();
                }
            }
        }
    }

    private void OnLinkDown(PeerLink link, string reason)
    {
        lock (_primaries)
        {
            foreach (var (r, _, _) in _primaries.Values)
            {
                foreach (var t in r.Targets.Where(t => t.Link == link && t.State != ReplicaState.Offline))
                {
                    t.State = ReplicaState.Offline;
                    t.LastError = reason;
                }
            }
        }
    }

    private void StartPrimary(ReplicatedVolumeInfo info, EngineVolume v)
    {
        v.RaiseNextLsn(info.EpochStartLsn);
        v.SetFenced(false);
        var targets = info.Replicas.Where(n => n != SelfId).Select(n => new ReplicaTarget(n, Link(n))).ToList();
        var r = new VolumeReplicator(this, v, targets, info.MinReplicas, info.EpochStartLsn, _options.Log);
        v.AttachForwarder(r);
        var stop = new CancellationTokenSource();
        var loop = Task.Run(() => ResyncLoopAsync(r, stop.Token));
        lock (_primaries)
        {
            _primaries[info.Name] = (r, stop, loop);
        }
    }

    /// <summary>Starts a resync for every replica that is reachable but not in sync, whenever something changes (and every few seconds).</summary>
    private async Task ResyncLoopAsync(VolumeReplicator r, CancellationToken ct)
    {
        var running = new List<Task>();
        while (!ct.IsCancellationRequested && !r.Fenced)
        {
            for (var i = 0; i < r.Targets.Count; i++)
            {
                var t = r.Targets[i];
                if (t.State != ReplicaState.InSync && t.Link.IsUp && Volatile.Read(ref t.Resyncing) == 0)
                {
                    var index = i;
                    running.Add(Task.Run(() => r.ResyncAsync(index, _options.ResyncBytesPerSecond, ct), ct));
                }
            }
            running.RemoveAll(x => x.IsCompleted);
            try
            {
                await r.ResyncNeeded.WaitAsync(TimeSpan.FromSeconds(2), ct).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                break;
            }
        }
        try
        {
            await Task.WhenAll(running).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
        }
    }

    /// <summary>True if this node serves the volume to clients: not replicated, or its primary here.</summary>
    public bool IsServable(string name)
    {
        var at = name.IndexOf('@', StringComparison.Ordinal);
        var info = Catalog.Get(at < 0 ? name : name[..at]);
        return info == null || (info.Role == ReplicaRole.Primary && !IsFenced(info.Name));
    }

    private bool IsFenced(string name)
    {
        lock (_primaries)
        {
            return _primaries.TryGetValue(name, out var p) && p.Replicator.Fenced;
        }
    }

    // ---- operator actions ----

    /// <summary>Creates a volume here (primary) with <paramref name="replicas"/> copies in all; returns when every copy is in sync.</summary>
    public async Task<EngineVolume> CreateAsync(string name, long size, int blockSize, int replicas, int minReplicas)
    {
        if (replicas is < 1 or > 3)
        {
            throw new ArgumentException($"replicas must be 1, 2 or 3 (got {replicas})");
        }
        if (minReplicas < 1 || minReplicas > replicas)
        {
            throw new ArgumentException($"min-replicas must be between 1 and {replicas} (got {minReplicas})");
        }
        if (replicas == 1)
        {
            return await Pool.CreateVolumeAsync(name, size, blockSize).ConfigureAwait(false);
        }
        await _changes.WaitAsync().ConfigureAwait(false);
        try
        {
            var peers = Membership.Nodes.Where(n => n.Id != SelfId).Select(n => n.Id).ToList();
            if (peers.Count < replicas - 1)
            {
                throw new InvalidOperationException($"{replicas} replicas need {replicas - 1} other node(s); the membership lists {peers.Count}");
            }
            // Reachable nodes first, in membership order.
            var links = peers.Select(Link).ToList();
            await WaitForLinksAsync(links, TimeSpan.FromSeconds(5)).ConfigureAwait(false);
            var chosen = links.Where(l => l.IsUp).Take(replicas - 1).Select(l => l.PeerId).ToList();
            if (chosen.Count < replicas - 1)
            {
                throw new InvalidOperationException($"only {chosen.Count} of the {replicas - 1} other node(s) needed are reachable ({string.Join(", ", links.Where(l => !l.IsUp).Select(l => l.PeerId))} are not)");
            }
            var v = await Pool.CreateVolumeAsync(name, size, blockSize).ConfigureAwait(false);
            await Pool.SetEpochAsync(name, 1).ConfigureAwait(false);
            var info = new ReplicatedVolumeInfo
            {
                Name = name, Uid = v.Uid, Role = ReplicaRole.Primary, Primary = SelfId, Replicas = [SelfId, .. chosen],
                MinReplicas = minReplicas,
            }.WithEpoch(1, 0, 1);
            Catalog.Set(name, info);
            StartPrimary(info, v);
            var r = Replicator(name)!;
            r.ResyncNeeded.Release();
            var deadline = Environment.TickCount64 + 15_000;
            while (r.Targets.Any(t => t.State != ReplicaState.InSync) && Environment.TickCount64 < deadline)
            {
                await Task.Delay(20).ConfigureAwait(false);
            }
            var notReady = r.Targets.Where(t => t.State != ReplicaState.InSync).ToList();
            if (notReady.Count > 0)
            {
                Log(PoolLogLevel.Warning, $"replication: volume {name} created, but {string.Join(", ", notReady.Select(t => $"{t.Node} ({t.LastError})"))} not in sync yet; resync retries");
            }
            Log(PoolLogLevel.Information, $"replication: volume {name} created with replicas on {string.Join(", ", info.Replicas)} (min {minReplicas})");
            return v;
        }
        finally
        {
            _changes.Release();
        }
    }

    private static async Task WaitForLinksAsync(IReadOnlyList<PeerLink> links, TimeSpan timeout)
    {
        var deadline = Environment.TickCount64 + (long)timeout.TotalMilliseconds;
        while (links.Any(l => !l.IsUp) && Environment.TickCount64 < deadline)
        {
            await Task.Delay(50).ConfigureAwait(false);
        }
    }

    internal VolumeReplicator? Replicator(string name)
    {
        lock (_primaries)
        {
            return _primaries.TryGetValue(name, out var p) ? p.Replicator : null;
        }
    }

    /// <summary>Passes a lifecycle change (resize, delete, snapshot) to the replicas that are in sync.</summary>
    public async Task<IReadOnlyList<string>> ControlAsync(string name, ControlRequest request)
    {
        if (Replicator(name) is not { } r)
        {
            return [];
        }
        var body = JsonSerializer.SerializeToUtf8Bytes(request, Json);
        var failed = await r.BroadcastAsync(t => new OutFrame { Type = FrameType.Control, Volume = t.Handle, Body = body }, inSyncOnly: request.Op != "delete").ConfigureAwait(false);
        if (request.Op == "delete")
        {
            await StopPrimaryAsync(name).ConfigureAwait(false);
            Catalog.Set(name, null);
        }
        return failed;
    }

    private async Task StopPrimaryAsync(string name)
    {
        (VolumeReplicator Replicator, CancellationTokenSource Stop, Task Loop) p;
        lock (_primaries)
        {
            if (!_primaries.Remove(name, out p))
            {
                return;
            }
        }
        p.Replicator.Volume.AttachForwarder(null);
        await p.Stop.CancelAsync().ConfigureAwait(false);
        await p.Loop.ConfigureAwait(false);
        p.Stop.Dispose();
    }

    /// <summary>
    /// Makes this node the volume's primary: raises the epoch on every reachable copy (fencing the
    /// old primary there), then serves it and resyncs the others. Refused without a majority of
    /// the copies reachable, or when a reachable copy holds newer data, unless forced.
    /// </summary>
    public async Task AttachAsync(string name, bool force)
    {
        await _changes.WaitAsync().ConfigureAwait(false);
        try
        {
            var info = Catalog.Get(name) ?? throw new InvalidOperationException($"volume {name} is not replicated on this node");
            if (info.Role == ReplicaRole.Primary && !IsFenced(name))
            {
                throw new InvalidOperationException($"node {SelfId} is already the primary of {name}");
            }
            var v = Pool.OpenVolume(name);
            var others = info.Replicas.Where(n => n != SelfId).ToList();
            var links = others.Select(Link).ToList();
            await WaitForLinksAsync(links, TimeSpan.FromSeconds(3)).ConfigureAwait(false);
            var probes = new List<(PeerLink Link, OpenResponse Open)>();
            foreach (var l in links.Where(l => l.IsUp))
            {
                var req = new OpenRequest(name, v.Uid, v.Size, v.LogicalBlockSize, v.Epoch, SelfId, info.Replicas, info.MinReplicas, Create: false, Probe: true);
                var (status, body) = await l.CallAsync(new OutFrame { Type = FrameType.Open, Body = JsonSerializer.SerializeToUtf8Bytes(req, Json) }).ConfigureAwait(false);
                if (status == ReplicationStatus.Ok && JsonSerializer.Deserialize<OpenResponse>(body, Json) is { } open)
                {
                    probes.Add((l, open));
                }
            }
            var majority = (info.Replicas.Count / 2) + 1;
            if (probes.Count + 1 < majority && !force)
            {
                throw new InvalidOperationException($"only {probes.Count + 1} of the {info.Replicas.Count} copies of {name} are reachable; a majority ({majority}) is needed so the old primary cannot go on writing. If the unreachable nodes are down for good, attach with --force");
            }
            var ahead = probes.Where(p => p.Open.Epoch == v.Epoch && p.Open.AppliedLsn > v.Lsn).ToList();
            if (ahead.Count > 0 && !force)
            {
                throw new InvalidOperationException($"node {ahead[0].Link.PeerId} holds newer data of {name} (LSN {ahead[0].Open.AppliedLsn}, here {v.Lsn}); attach it there instead, or attach here with --force and lose what only it has");
            }
            var epoch = Math.Max(v.Epoch, probes.Count == 0 ? 0 : probes.Max(p => p.Open.Epoch)) + 1;
            var baseLsn = v.Lsn;
            var start = Math.Max(baseLsn, probes.Count == 0 ? 0 : probes.Max(p => p.Open.AppliedLsn)) + EpochLsnGap;
            foreach (var (l, open) in probes)
            {
                var (status, _) = await l.CallAsync(new OutFrame { Type = FrameType.SetEpoch, Volume = open.Handle, Body = VolumeReplicator.U32(epoch) }).ConfigureAwait(false);
                if (status != ReplicationStatus.Ok)
                {
                    Log(PoolLogLevel.Warning, $"replication: attach {name}: node {l.PeerId} did not take epoch {epoch} ({status}); it is resynced later");
                }
            }
            await Pool.SetEpochAsync(name, epoch).ConfigureAwait(false);
            var updated = info.WithEpoch(epoch, baseLsn, start) with { Role = ReplicaRole.Primary, Primary = SelfId, ResyncFrom = null };
            Catalog.Set(name, updated);
            await StopPrimaryAsync(name).ConfigureAwait(false);
            StartPrimary(updated, v);
            // Serve with enough copies: wait (bounded) for the reachable replicas' resync.
            var r = Replicator(name)!;
            r.ResyncNeeded.Release();
            var deadline = Environment.TickCount64 + 15_000;
            while (1 + r.Targets.Count(t => t.State == ReplicaState.InSync) < Math.Min(info.MinReplicas, 1 + probes.Count) && Environment.TickCount64 < deadline)
            {
                await Task.Delay(20).ConfigureAwait(false);
            }
            Log(PoolLogLevel.Information, $"replication: node {SelfId} is now the primary of {name} (epoch {epoch}); {probes.Count} other copies reached");
        }
        finally
        {
            _changes.Release();
        }
    }

    /// <summary>Compares per-chunk checksums of every in-sync replica with this copy; returns the differing byte ranges per node.</summary>
    public async Task<IReadOnlyList<(string Node, long Offset, long Length)>> VerifyAsync(string name)
    {
        var r = Replicator(name) ?? throw new InvalidOperationException($"node {SelfId} is not the primary of {name}; run verify on its primary");
        const int Chunk = Checksums.MaxChunkBlocks;
        // One request covers 8 MiB: the replica checksums it in order with the records it applies,
        // so a region must be short enough not to hold up replicated writes or hit the request timeout.
        const int Region = 8 * Chunk;
        var v = r.Volume;
        var blocks = (v.Size + Ballast.Engine.Log.PoolLayout.BlockSize - 1) >> Ballast.Engine.Log.PoolLayout.BlockShift;
        var diffs = new List<(string, long, long)>();
        foreach (var t in r.Targets.Where(t => t.State == ReplicaState.InSync))
        {
            for (long lba = 0; lba < blocks; lba += Region)
            {
                var n = (int)Math.Min(Region, blocks - lba);
                var bad = await CompareAsync(t, v, lba, n, Chunk).ConfigureAwait(false);
                foreach (var chunk in bad)
                {
                    // A write in flight can make one comparison differ: look again before reporting.
                    var c = lba + ((long)chunk * Chunk);
                    var again = await CompareAsync(t, v, c, (int)Math.Min(Chunk, blocks - c), Chunk).ConfigureAwait(false);
                    if (again.Count > 0)
                    {
                        diffs.Add((t.Node, c << Ballast.Engine.Log.PoolLayout.BlockShift, Math.Min((long)Chunk << Ballast.Engine.Log.PoolLayout.BlockShift, v.Size - (c << Ballast.Engine.Log.PoolLayout.BlockShift))));
                    }
                }
            }
        }
        return diffs;
    }

    private static async Task<List<int>> CompareAsync(ReplicaTarget t, EngineVolume v, long lba, int blocks, int chunk)
    {
        var req = new byte[16];
        System.Buffers.Binary.BinaryPrimitives.WriteInt64LittleEndian(req, lba);
        System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(req.AsSpan(8), blocks);
        System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(req.AsSpan(12), chunk);
        // The replica answers after applying everything sent before; flushing here orders this copy's reads the same way.
        var remote = t.Link.CallAsync(new OutFrame { Type = FrameType.Checksums, Volume = t.Handle, Body = req });
        await v.FlushAsync().ConfigureAwait(false);
        var local = await Checksums.ComputeAsync(v, lba, blocks, chunk).ConfigureAwait(false);
        var (status, body) = await remote.ConfigureAwait(false);
        if (status != ReplicationStatus.Ok)
        {
            throw new InvalidOperationException($"node {t.Node} could not checksum {v.Name}: {status} {System.Text.Encoding.UTF8.GetString(body)}");
        }
        var bad = new List<int>();
        for (var i = 0; i * 4 < local.Length; i++)
        {
            if (i * 4 + 4 > body.Length || !local.AsSpan(i * 4, 4).SequenceEqual(body.AsSpan(i * 4, 4)))
            {
                bad.Add(i);
            }
        }
        return bad;
    }

    /// <summary>Every copy of a replicated volume as this node sees it (null if not replicated).</summary>
    public IReadOnlyList<ReplicaStatus>? Describe(string name)
    {
        var info = Catalog.Get(name);
        if (info == null)
        {
            return null;
        }
        var list = new List<ReplicaStatus>();
        if (info.Role == ReplicaRole.Primary && Replicator(name) is { } r)
        {
            var lsn = r.Volume.Lsn;
            list.Add(new ReplicaStatus(SelfId, "primary", r.Fenced ? "fenced" : "in-sync", lsn, 0, null, null, 0, null));
            foreach (var t in r.Targets)
            {
                double? pct = null, eta = null;
                if (t.State == ReplicaState.Resyncing && t.ResyncTotalBytes > 0)
                {
                    pct = Math.Min(100, 100.0 * t.ResyncDoneBytes / t.ResyncTotalBytes);
                    var elapsed = (Environment.TickCount64 - t.ResyncStartedTicks) / 1000.0;
                    eta = t.ResyncDoneBytes > 0 ? elapsed * (t.ResyncTotalBytes - t.ResyncDoneBytes) / t.ResyncDoneBytes : null;
                }
                var state = t.State switch
                {
                    ReplicaState.InSync => "in-sync",
                    ReplicaState.Resyncing => "resyncing",
                    ReplicaState.OutOfSync => "out-of-sync",
                    _ => "offline",
                };
                var rl = t.State == ReplicaState.InSync ? lsn : t.ReportedLsn;
                list.Add(new ReplicaStatus(t.Node, "replica", state, rl, Math.Max(0, lsn - rl), pct, eta, Interlocked.Read(ref t.ResyncedBytes), t.LastError));
            }
        }
        else
        {
            var lsn = Pool.TryOpenVolume(name, out var v) ? v.Lsn : 0;
            list.Add(new ReplicaStatus(SelfId, "replica", info.ResyncFrom != null ? "resyncing" : "replica", lsn, 0, null, null, 0, null));
            list.Add(new ReplicaStatus(info.Primary, "primary", "unknown here", 0, 0, null, null, 0, "ask the primary's ballastd for its view"));
        }
        return list;
    }

    public ReplicatedVolumeInfo? Info(string name) => Catalog.Get(name);

    // ---- the replica side (called by sessions) ----

    internal async Task<EngineVolume> OpenReplicaAsync(OpenRequest req, string peer)
    {
        if (VolumeNames.Check(req.Name) is { } bad)
        {
            throw new ArgumentException(bad);
        }
        var info = Catalog.Get(req.Name);
        if (info is { Role: ReplicaRole.Primary } && Pool.TryOpenVolume(req.Name, out var mine))
        {
            if (req.Epoch > mine.Epoch)
            {
                await DemoteAsync(req.Name, req.Primary).ConfigureAwait(false);
            }
            else if (!req.Probe)
            {
                throw new BlockVolumeException(BlockError.Fenced, $"node {SelfId} is the primary of {req.Name} at epoch {mine.Epoch}; node {peer} at epoch {req.Epoch} is not");
            }
        }
        if (!Pool.TryOpenVolume(req.Name, out var v))
        {
            if (!req.Create)
            {
                throw new VolumeNotFoundException(req.Name);
            }
            if (req.Size <= 0 || req.BlockSize is not (512 or 4096))
            {
                throw new ArgumentException($"invalid geometry for {req.Name}: {req.Size} bytes, {req.BlockSize}-byte blocks");
            }
            v = await Pool.CreateVolumeAsync(req.Name, req.Size, req.BlockSize, uid: req.Uid).ConfigureAwait(false);
            Log(PoolLogLevel.Information, $"replication: created replica of {req.Name} for primary {req.Primary}");
        }
        else if (v.Uid != req.Uid)
        {
            throw new ArgumentException($"a different volume named {req.Name} exists on node {SelfId} (uid {v.Uid}, asked {req.Uid})");
        }
        if (req.Probe)
        {
            return v;
        }
        if (req.Epoch < v.Epoch)
        {
            throw new BlockVolumeException(BlockError.Fenced, $"volume {req.Name} on node {SelfId} is at epoch {v.Epoch}; node {peer} at epoch {req.Epoch} is no longer its primary");
        }
        if (v.Size < req.Size)
        {
            await Pool.ResizeVolumeAsync(req.Name, req.Size).ConfigureAwait(false);
        }
        v.SetFenced(true);
        var current = Catalog.Get(req.Name);
        Catalog.Set(req.Name, new ReplicatedVolumeInfo
        {
            Name = req.Name, Uid = req.Uid, Role = ReplicaRole.Replica, Primary = req.Primary, Replicas = req.Replicas,
            MinReplicas = req.MinReplicas, Epoch = v.Epoch, EpochStartLsn = current?.EpochStartLsn ?? 0, ResyncFrom = current?.ResyncFrom,
            EpochHistory = current?.EpochHistory ?? [],
        });
        return v;
    }

    internal async Task RaiseEpochAsync(string name, uint epoch, string peer)
    {
        var info = Catalog.Get(name);
        if (info is { Role: ReplicaRole.Primary })
        {
            await DemoteAsync(name, peer).ConfigureAwait(false);
        }
        var v = Pool.OpenVolume(name);
        if (epoch > v.Epoch)
        {
            await Pool.SetEpochAsync(name, epoch).ConfigureAwait(false);
            Catalog.Update(name, i => i with { Epoch = epoch, Primary = peer });
            Log(PoolLogLevel.Information, $"replication: volume {name} moved to epoch {epoch} (primary {peer})");
        }
    }

    private async Task DemoteAsync(string name, string newPrimary)
    {
        await StopPrimaryAsync(name).ConfigureAwait(false);
        if (Pool.TryOpenVolume(name, out var v))
        {
            v.SetFenced(true);
        }
        Catalog.Update(name, i => i with { Role = ReplicaRole.Replica, Primary = newPrimary });
        Log(PoolLogLevel.Warning, $"replication: node {newPrimary} took over volume {name}; this node is a replica of it now and stops serving it");
        VolumeDemoted?.Invoke(name);
    }

    internal async Task ApplyControlAsync(EngineVolume v, ControlRequest req)
    {
        switch (req.Op)
        {
            case "resize":
                await Pool.ResizeVolumeAsync(v.Name, req.Size, req.Force).ConfigureAwait(false);
                break;
            case "delete":
                await Pool.DeleteVolumeAsync(v.Name, withSnapshots: true).ConfigureAwait(false);
                Catalog.Set(v.Name, null);
                break;
            case "snapshot" when req.Snapshot != null:
                await Pool.CreateSnapshotAsync(v.Name, req.Snapshot).ConfigureAwait(false);
                break;
            case "delete-snapshot" when req.Snapshot != null:
                await Pool.DeleteVolumeAsync($"{v.Name}@{req.Snapshot}").ConfigureAwait(false);
                break;
            default:
                throw new ArgumentException($"unknown control operation {req.Op}");
        }
    }

    /// <summary>Test hook: drop every replication connection of this node (both directions); links reconnect.</summary>
    public void DropConnections()
    {
        _server?.DropConnections("dropped on request");
        lock (_links)
        {
            foreach (var l in _links.Values)
            {
                l.Disconnect("dropped on request");
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        List<string> names;
        lock (_primaries)
        {
            names = [.. _primaries.Keys];
        }
        foreach (var n in names)
        {
            await StopPrimaryAsync(n).ConfigureAwait(false);
        }
        List<PeerLink> links;
        lock (_links)
        {
            links = [.. _links.Values];
            _links.Clear();
        }
        foreach (var l in links)
        {
            await l.DisposeAsync().ConfigureAwait(false);
        }
        if (_server != null)
        {
            await _server.DisposeAsync().ConfigureAwait(false);
        }
    }
}
