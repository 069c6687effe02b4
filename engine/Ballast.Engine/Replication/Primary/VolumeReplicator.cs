using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using Ballast.Engine.Log;
using Ballast.Engine.Replication.Transport;
using Ballast.Engine.Replication.Wire;
using Ballast.Engine.Volumes;

namespace Ballast.Engine.Replication.Primary;

/// <summary>
/// The primary's replication of one volume. As the engine's forwarder it sends each record to
/// the in-sync and resyncing replicas and completes the client's write when every in-sync one
/// acknowledged it. A replica that fails goes out of sync (the write still completes while
/// enough copies remain); a replica answering "fenced" means a newer primary exists, and this
/// copy stops taking writes. Resync brings replicas back while writes go on.
/// </summary>
internal sealed class VolumeReplicator : IRecordForwarder
{
    private readonly ReplicationNode _node;
    private readonly Stack<ReplicaWrite> _pool = new();
    private readonly Action<PoolLogLevel, string>? _log;

    public VolumeReplicator(ReplicationNode node, EngineVolume volume, IReadOnlyList<ReplicaTarget> targets, int minReplicas, long epochStartLsn, Action<PoolLogLevel, string>? log)
    {
        _node = node;
        Volume = volume;
        Targets = targets;
        MinReplicas = minReplicas;
        EpochStartLsn = epochStartLsn;
        _log = log;
    }

    public EngineVolume Volume { get; }
    public string Name => Volume.Name;
    public IReadOnlyList<ReplicaTarget> Targets { get; }
    public int MinReplicas { get; }
    public long EpochStartLsn { get; }

    private volatile bool _fenced;

    public bool Fenced => _fenced;

    /// <summary>Signalled when a replica needs a resync (it failed, or its link came up).</summary>
    public readonly SemaphoreSlim ResyncNeeded = new(0, int.MaxValue);

    public Exception FencedError() => new BlockVolumeException(BlockError.Fenced,
        $"volume {Name}: a newer primary took over (epoch above {Volume.Epoch}); this node no longer takes writes for it");

    public void Fence()
    {
        if (!_fenced)
        {
            _fenced = true;
            Volume.SetFenced(true);
            _log?.Invoke(PoolLogLevel.Error, $"replication: volume {Name} is fenced: a replica reports a newer epoch; writes here are refused");
        }
    }

    // ---- the write path (called under the appender's queue lock: only queueing here) ----

    public ValueTask Forward(in ReplicatedRecord record, ReadOnlyMemory<byte> payload, bool completeInline)
    {
        if (_fenced)
        {
            return ValueTask.FromException(FencedError());
        }
        var w = Rent(completeInline);
        var type = record.Kind switch { RecordKind.Data => FrameType.Write, RecordKind.Zero => FrameType.Zero, _ => FrameType.Trim };
        var rh = new RecordHeader { Lsn = record.Lsn, Epoch = record.Epoch, Lba = record.Lba, Blocks = record.BlockCount, Flags = record.Fua ? RecordHeader.Fua : 0 };
        for (var i = 0; i < Targets.Count; i++)
        {
            var t = Targets[i];
            var state = t.State;
            if (state is not (ReplicaState.InSync or ReplicaState.Resyncing) || t.Generation != t.Link.Generation)
            {
                continue;
            }
            var frame = new OutFrame { Type = type, Volume = t.Handle, HasRecord = true, Record = rh, Body = record.Kind == RecordKind.Data ? payload : default };
            // A resyncing replica's answer is awaited too (the payload is the client's buffer and must
            // outlive the send), but it does not count as a copy and its failure fails nothing.
            var tag = state == ReplicaState.InSync ? i : i | ReplicaWrite.NotCounted;
            w.Expect();
            if (!t.Link.Send(frame, w, tag))
            {
                w.OnResponse(ReplicationStatus.Io, "link down"u8, tag, received: false);
            }
        }
        w.Armed();
        return new ValueTask(w, w.Version);
    }

    public ValueTask FlushAsync(bool completeInline, CancellationToken ct)
    {
        if (_fenced)
        {
            return ValueTask.FromException(FencedError());
        }
        var w = Rent(completeInline);
        for (var i = 0; i < Targets.Count; i++)
        {
            var t = Targets[i];
            if (t.State != ReplicaState.InSync || t.Generation != t.Link.Generation)
            {
                continue;
            }
            w.Expect();
            if (!t.Link.Send(new OutFrame { Type = FrameType.Flush, Volume = t.Handle }, w, i))
            {
                w.OnResponse(ReplicationStatus.Io, "link down"u8, i, received: false);
            }
        }
        w.Armed();
        return new ValueTask(w, w.Version);
    }

    private ReplicaWrite Rent(bool completeInline)
    {
        ReplicaWrite? w = null;
        lock (_pool)
        {
            if (_pool.Count > 0)
            {
                w = _pool.Pop();
            }
        }
        w ??= new ReplicaWrite();
        w.Reset(this, completeInline);
        return w;
    }

    internal void Recycle(ReplicaWrite w)
    {
        lock (_pool)
        {
            if (_pool.Count < 4096)
            {
                _pool.Push(w);
            }
        }
    }

    /// <summary>A replica did not take a request: fenced stops this primary, anything else puts the replica out of sync.</summary>
    public void TargetFailed(int index, ReplicationStatus status, ReadOnlySpan<byte> message)
    {
        if (status == ReplicationStatus.Fenced)
        {
            Fence();
            return;
        }
        var t = Targets[index];
        var was = t.State;
        if (was is ReplicaState.InSync or ReplicaState.Resyncing)
        {
            t.State = t.Link.IsUp && t.Generation == t.Link.Generation ? ReplicaState.OutOfSync : ReplicaState.Offline;
            t.LastError = $"{status}: {Encoding.UTF8.GetString(message)}";
            _log?.Invoke(PoolLogLevel.Warning, $"replication: volume {Name}: replica on node {t.Node} is {t.State.ToString().ToLowerInvariant()} ({t.LastError})");
            _node.CountReplicaFailure();
            ResyncNeeded.Release();
        }
    }

    // ---- resync ----

    /// <summary>
    /// Brings one replica back in sync: opens the volume there, resets any blocks it changed that
    /// this primary did not (a tail from an older epoch), then copies what changed here after the
    /// replica's last complete LSN while live writes also flow to it, and finally counts it in sync.
    /// </summary>
    public async Task ResyncAsync(int index, long bytesPerSecond, CancellationToken ct)
    {
        var t = Targets[index];
        if (Interlocked.Exchange(ref t.Resyncing, 1) != 0)
        {
            return;
        }
        try
        {
            var generation = t.Link.Generation;
            var open = await OpenAsync(t).ConfigureAwait(false);
            t.Handle = open.Handle;
            t.Generation = generation;
            t.ReportedLsn = open.StableLsn;
            var epoch = Volume.Epoch;
            if (open.Epoch > epoch)
            {
                Fence();
                return;
            }
            var from = Math.Min(open.StableLsn, Volume.Lsn);
            t.ResyncStartedTicks = Environment.TickCount64;
            t.ResyncDoneBytes = 0;
            t.ResyncTotalBytes = 0;
            if (open.Epoch < epoch)
            {
                // The replica may hold writes of an older primary this one never had: reset them.
                var info = _node.Catalog.Get(Name) ?? throw new ResyncException($"volume {Name} is not in the replication catalog");
                from = Math.Min(from, info.DivergencePoint(open.Epoch));
                var divergent = await ChangedOnReplicaAsync(t, from).ConfigureAwait(false);
                await CallOkAsync(t, new OutFrame { Type = FrameType.SetEpoch, Volume = t.Handle, Body = U32(epoch) }).ConfigureAwait(false);
                foreach (var (lba, blocks) in divergent)
                {
                    await CopyAsync(t, Volume.GetPieces(lba << PoolLayout.BlockShift, (long)blocks << PoolLayout.BlockShift), force: true, bytesPerSecond, ct).ConfigureAwait(false);
                }
            }
            await CallOkAsync(t, new OutFrame { Type = FrameType.ResyncBegin, Volume = t.Handle, Body = I64(from) }).ConfigureAwait(false);
            // From here live writes reach the replica; the barrier makes every earlier write visible to the walk below.
            t.State = ReplicaState.Resyncing;
            await Volume.BarrierAsync().ConfigureAwait(false);
            var pieces = Volume.GetChangedPieces(from);
            t.ResyncTotalBytes = pieces.Sum(p => p.State == AllocationState.Data ? p.Length : 0);
            _log?.Invoke(PoolLogLevel.Information, $"replication: volume {Name}: resyncing node {t.Node} from LSN {from}: {pieces.Count} extent(s), {t.ResyncTotalBytes >> 20} MiB of data");
            await CopyAsync(t, pieces, force: false, bytesPerSecond, ct).ConfigureAwait(false);
            await CallOkAsync(t, new OutFrame { Type = FrameType.ResyncEnd, Volume = t.Handle }).ConfigureAwait(false);
            if (t.State == ReplicaState.Resyncing && t.Generation == t.Link.Generation)
            {
                t.State = ReplicaState.InSync;
                t.LastError = null;
                t.ReportedLsn = Volume.Lsn;
                _log?.Invoke(PoolLogLevel.Information, $"replication: volume {Name}: node {t.Node} is in sync ({t.ResyncDoneBytes >> 10} KiB copied in {(Environment.TickCount64 - t.ResyncStartedTicks) / 1000.0:0.0} s)");
            }
        }
        catch (ResyncException e)
        {
            if (t.State is ReplicaState.Resyncing or ReplicaState.InSync)
            {
                t.State = t.Link.IsUp ? ReplicaState.OutOfSync : ReplicaState.Offline;
            }
            t.LastError = e.Message;
            _log?.Invoke(PoolLogLevel.Warning, $"replication: volume {Name}: resync of node {t.Node} stopped: {e.Message}");
        }
        finally
        {
            Volatile.Write(ref t.Resyncing, 0);
        }
    }

    private async Task<OpenResponse> OpenAsync(ReplicaTarget t)
    {
        var info = _node.Catalog.Get(Name) ?? throw new ResyncException($"volume {Name} is not in the replication catalog");
        var req = new OpenRequest(Name, Volume.Uid, Volume.Size, Volume.LogicalBlockSize, Volume.Epoch, _node.SelfId, info.Replicas, info.MinReplicas, Create: true);
        var body = await CallOkAsync(t, new OutFrame { Type = FrameType.Open, Body = JsonSerializer.SerializeToUtf8Bytes(req, ReplicationNode.Json) }).ConfigureAwait(false);
        return JsonSerializer.Deserialize<OpenResponse>(body, ReplicationNode.Json) ?? throw new ResyncException("empty open response");
    }

    private async Task<List<(long Lba, int Blocks)>> ChangedOnReplicaAsync(ReplicaTarget t, long since)
    {
        var body = await CallOkAsync(t, new OutFrame { Type = FrameType.Changed, Volume = t.Handle, Body = I64(since) }).ConfigureAwait(false);
        var list = new List<(long, int)>();
        for (var i = 0; i + 12 <= body.Length; i += 12)
        {
            list.Add((BinaryPrimitives.ReadInt64LittleEndian(body.AsSpan(i)), BinaryPrimitives.ReadInt32LittleEndian(body.AsSpan(i + 8))));
        }
        return list;
    }

    /// <summary>Sends extents as resync copies, in groups, at most <paramref name="bytesPerSecond"/>.</summary>
    private Task CopyAsync(ReplicaTarget t, IReadOnlyList<ChangedExtent> pieces, bool force, long bytesPerSecond, CancellationToken ct) =>
        new ResyncCopy(Volume, t, force, bytesPerSecond, bytes =>
        {
            t.ResyncDoneBytes += bytes;
            Interlocked.Add(ref t.ResyncedBytes, bytes);
            _node.CountResyncBytes(bytes);
        }).RunAsync(pieces, ct);

    private async Task<byte[]> CallOkAsync(ReplicaTarget t, OutFrame frame)
    {
        var (status, body) = await t.Link.CallAsync(frame).ConfigureAwait(false);
        if (status == ReplicationStatus.Fenced)
        {
            Fence();
        }
        if (status != ReplicationStatus.Ok)
        {
            throw new ResyncException($"node {t.Node} answered {frame.Type} with {status}: {Encoding.UTF8.GetString(body)}");
        }
        return body;
    }

    /// <summary>Sends a request to every reachable replica (control operations); returns the nodes that failed.</summary>
    public async Task<List<string>> BroadcastAsync(Func<ReplicaTarget, OutFrame> frame, bool inSyncOnly)
    {
        var failed = new List<string>();
        foreach (var t in Targets)
        {
            if ((inSyncOnly && t.State != ReplicaState.InSync) || t.Generation != t.Link.Generation)
            {
                continue;
            }
            var (status, body) = await t.Link.CallAsync(frame(t)).ConfigureAwait(false);
            if (status == ReplicationStatus.Fenced)
            {
                Fence();
            }
            if (status != ReplicationStatus.Ok)
            {
                failed.Add($"{t.Node} ({status}: {Encoding.UTF8.GetString(body)})");
            }
        }
        return failed;
    }

    public static byte[] I64(long v)
    {
        var b = new byte[8];
        BinaryPrimitives.WriteInt64LittleEndian(b, v);
        return b;
    }

    public static byte[] U32(uint v)
    {
        var b = new byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(b, v);
        return b;
    }
}

/// <summary>A resync step failed; the replica stays out of sync until the next attempt.</summary>
internal sealed class ResyncException(string message) : Exception(message);
