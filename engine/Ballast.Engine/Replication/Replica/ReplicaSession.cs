using System.Buffers;
using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using Ballast.Engine.Log;
using Ballast.Engine.Replication.Cluster;
using Ballast.Engine.Replication.Transport;
using Ballast.Engine.Replication.Wire;
using Ballast.Engine.Volumes;

namespace Ballast.Engine.Replication.Replica;

/// <summary>
/// One primary's connection to this node, seen from the replica: frames are applied in the
/// order they arrive (a record's LSN order), each answered when it is done. Records start in
/// order and complete concurrently, so many are in flight.
/// </summary>
internal sealed class ReplicaSession(FrameConnection connection, ReplicationNode node)
{
    private static readonly byte[] Ok = new byte[4];
    private readonly List<EngineVolume?> _handles = [];
    private string _peer = connection.Remote;

    public void Start() => connection.Start(OnFrameAsync);

    private async ValueTask OnFrameAsync(FrameHeader h, byte[] payload)
    {
        var returnBuffer = true;
        try
        {
            if (h.IsResponse)
            {
                connection.Close("a replica does not expect responses");
                return;
            }
            var body = payload.AsMemory(0, h.Length);
            if (h.Type is FrameType.Open or FrameType.ResyncBegin or FrameType.ResyncEnd or FrameType.Changed
                or FrameType.SetEpoch or FrameType.Checksums or FrameType.Control)
            {
                // These write the catalog (with fsyncs) or walk a volume. The receive loop runs on
                // the runtime's socket thread, which serves other connections (NBD clients too):
                // go to the thread pool. The loop waits for this frame, so order still holds.
                await Task.Yield();
            }
            switch (h.Type)
            {
                case FrameType.Hello:
                    _peer = Encoding.UTF8.GetString(body.Span);
                    Respond(h, ReplicationStatus.Ok);
                    break;
                case FrameType.Ping:
                    Respond(h, ReplicationStatus.Ok);
                    break;
                case FrameType.Open:
                    await OpenAsync(h, body).ConfigureAwait(false);
                    break;
                case FrameType.Write:
                case FrameType.Zero:
                case FrameType.Trim:
                    returnBuffer = !StartRecord(h, payload);
                    break;
                case FrameType.Resync:
                    returnBuffer = !StartResync(h, payload);
                    break;
                case FrameType.Flush:
                    if (Volume(h) is { } fv)
                    {
                        // The answer is only queued: it may run on the engine's sync thread.
                        Complete(h, fv.FlushInlineAtBatchEndAsync(), null);
                    }
                    break;
                case FrameType.ResyncBegin:
                case FrameType.ResyncEnd:
                    SetResyncFloor(h, body.Span);
                    break;
                case FrameType.Changed:
                    await ChangedAsync(h, body).ConfigureAwait(false);
                    break;
                case FrameType.SetEpoch:
                    await SetEpochAsync(h, body).ConfigureAwait(false);
                    break;
                case FrameType.Checksums:
                    await ChecksumsAsync(h, body).ConfigureAwait(false);
                    break;
                case FrameType.Control:
                    await ControlAsync(h, body).ConfigureAwait(false);
                    break;
                default:
                    Respond(h, ReplicationStatus.Invalid, $"unknown frame type {(byte)h.Type}");
                    break;
            }
        }
        catch (Exception e) when (e is BlockVolumeException or JsonException or ArgumentException or InvalidOperationException or KeyNotFoundException or IOException)
        {
            Respond(h, StatusOf(e), e.Message);
        }
        finally
        {
            if (returnBuffer)
            {
                ArrayPool<byte>.Shared.Return(payload);
            }
        }
    }

    private EngineVolume? Volume(FrameHeader h)
    {
        if (h.Volume < _handles.Count && _handles[(int)h.Volume] is { } v)
        {
            return v;
        }
        Respond(h, ReplicationStatus.NotFound, $"volume handle {h.Volume} is not open on this connection");
        return null;
    }

    private async Task OpenAsync(FrameHeader h, ReadOnlyMemory<byte> body)
    {
        var req = JsonSerializer.Deserialize<OpenRequest>(body.Span, ReplicationNode.Json) ?? throw new ArgumentException("empty open request");
        var v = await node.OpenReplicaAsync(req, _peer).ConfigureAwait(false);
        var info = node.Catalog.Get(req.Name);
        var handle = (uint)_handles.Count;
        _handles.Add(v);
        var stable = info?.ResyncFrom ?? v.Lsn;
        var resp = new OpenResponse(handle, Math.Min(stable, v.Lsn), v.Lsn, v.Epoch, false);
        Respond(h, ReplicationStatus.Ok, JsonSerializer.SerializeToUtf8Bytes(resp, ReplicationNode.Json));
    }

    /// <summary>Starts a Write/Zero/Trim in arrival order; true if the payload buffer now belongs to the apply.</summary>
    private bool StartRecord(FrameHeader h, byte[] payload)
    {
        if (Volume(h) is not { } v)
        {
            return false;
        }
        if (!RecordHeader.TryRead(payload.AsSpan(0, h.Length), out var rh))
        {
            Respond(h, ReplicationStatus.Invalid, "malformed record header");
            return false;
        }
        var kind = h.Type switch { FrameType.Write => RecordKind.Data, FrameType.Zero => RecordKind.Zero, _ => RecordKind.Trim };
        var data = payload.AsMemory(RecordHeader.Size, h.Length - RecordHeader.Size);
        ValueTask op;
        try
        {
            // What follows only queues the answer: it may run on the appender thread.
            op = v.ApplyReplicatedAsync(new ReplicatedRecord(kind, rh.Lsn, rh.Epoch, rh.Lba, rh.Blocks, (rh.Flags & RecordHeader.Fua) != 0), data, completeInline: true);
        }
        catch (BlockVolumeException e)
        {
            Respond(h, StatusOf(e), e.Message);
            return false;
        }
        Complete(h, op, payload);
        return true;
    }

    private bool StartResync(FrameHeader h, byte[] payload)
    {
        if (Volume(h) is not { } v)
        {
            return false;
        }
        if (!RecordHeader.TryRead(payload.AsSpan(0, h.Length), out var rh) || !Enum.IsDefined((RecordKind)((rh.Flags >> 8) & 0xFF)))
        {
            Respond(h, ReplicationStatus.Invalid, "malformed resync header");
            return false;
        }
        var kind = (RecordKind)((rh.Flags >> 8) & 0xFF);
        var data = payload.AsMemory(RecordHeader.Size, h.Length - RecordHeader.Size);
        ValueTask op;
        try
        {
            op = v.ApplyResyncAsync(kind, rh.Epoch, rh.Lba, rh.Blocks, data, rh.Lsn, force: (rh.Flags & RecordHeader.Force) != 0, completeInline: true);
        }
        catch (BlockVolumeException e)
        {
            Respond(h, StatusOf(e), e.Message);
            return false;
        }
        Complete(h, op, payload);
        return true;
    }

    /// <summary>Answers when <paramref name="op"/> completes, then returns the payload buffer.</summary>
    private void Complete(FrameHeader h, ValueTask op, byte[]? payload)
    {
        if (op.IsCompleted)
        {
            Finish(h, op, payload);
            return;
        }
        PendingAnswer p;
        lock (_answers)
        {
            p = _answers.Count > 0 ? _answers.Pop() : new PendingAnswer(this);
        }
        p.Start(h, op, payload);
    }

    private void Finish(FrameHeader h, ValueTask op, byte[]? payload)
    {
        try
        {
            op.GetAwaiter().GetResult();
            Respond(h, ReplicationStatus.Ok);
        }
        catch (Exception e)
        {
            // Every frame gets an answer; this may run on the appender's thread, which must not see it.
            Respond(h, StatusOf(e), e.Message);
        }
        finally
        {
            if (payload != null)
            {
                ArrayPool<byte>.Shared.Return(payload);
            }
        }
    }

    // Records complete on the appender's thread, many in flight: one of these per pending record,
    // reused, instead of an async method's box per record (about 400 bytes each).
    private readonly Stack<PendingAnswer> _answers = new();

    private sealed class PendingAnswer
    {
        private readonly ReplicaSession _session;
        private readonly Action _onCompleted;
        private FrameHeader _header;
        private ValueTask _op;
        private byte[]? _payload;

        public PendingAnswer(ReplicaSession session)
        {
            _session = session;
            _onCompleted = OnCompleted;
        }

        public void Start(FrameHeader h, ValueTask op, byte[]? payload)
        {
            _header = h;
            _op = op;
            _payload = payload;
            op.GetAwaiter().UnsafeOnCompleted(_onCompleted);
        }

        private void OnCompleted()
        {
            var (h, op, payload) = (_header, _op, _payload);
            (_header, _op, _payload) = (default, default, null);
            lock (_session._answers)
            {
                if (_session._answers.Count < 1024)
                {
                    _session._answers.Push(this);
                }
            }
            _session.Finish(h, op, payload);
        }
    }

    private void SetResyncFloor(FrameHeader h, ReadOnlySpan<byte> body)
    {
        if (Volume(h) is not { } v)
        {
            return;
        }
        long? floor = h.Type == FrameType.ResyncBegin && body.Length >= 8 ? BinaryPrimitives.ReadInt64LittleEndian(body) : null;
        // Durable before any resync copy is applied: a crash mid-resync must report the floor, not the live LSN.
        node.Catalog.Update(v.Name, i => i with { ResyncFrom = floor });
        Respond(h, ReplicationStatus.Ok);
    }

    private async Task ChangedAsync(FrameHeader h, ReadOnlyMemory<byte> body)
    {
        if (Volume(h) is not { } v || body.Length < 8)
        {
            return;
        }
        await v.FlushAsync().ConfigureAwait(false);
        var since = BinaryPrimitives.ReadInt64LittleEndian(body.Span);
        var pieces = v.GetChangedPieces(since);
        var res = new byte[12 * pieces.Count];
        for (var i = 0; i < pieces.Count; i++)
        {
            BinaryPrimitives.WriteInt64LittleEndian(res.AsSpan(12 * i), pieces[i].Offset >> PoolLayout.BlockShift);
            BinaryPrimitives.WriteInt32LittleEndian(res.AsSpan((12 * i) + 8), (int)Math.Min(int.MaxValue, (pieces[i].Length + PoolLayout.BlockSize - 1) >> PoolLayout.BlockShift));
        }
        Respond(h, ReplicationStatus.Ok, res);
    }

    private async Task SetEpochAsync(FrameHeader h, ReadOnlyMemory<byte> body)
    {
        if (Volume(h) is not { } v || body.Length < 4)
        {
            return;
        }
        var epoch = BinaryPrimitives.ReadUInt32LittleEndian(body.Span);
        await node.RaiseEpochAsync(v.Name, epoch, _peer).ConfigureAwait(false);
        Respond(h, ReplicationStatus.Ok);
    }

    private async Task ChecksumsAsync(FrameHeader h, ReadOnlyMemory<byte> body)
    {
        if (Volume(h) is not { } v || body.Length < 16)
        {
            return;
        }
        var lba = BinaryPrimitives.ReadInt64LittleEndian(body.Span);
        var blocks = BinaryPrimitives.ReadInt32LittleEndian(body.Span[8..]);
        var chunk = BinaryPrimitives.ReadInt32LittleEndian(body.Span[12..]);
        // Everything received before this frame is applied first.
        await v.FlushAsync().ConfigureAwait(false);
        var crcs = await Checksums.ComputeAsync(v, lba, blocks, chunk).ConfigureAwait(false);
        Respond(h, ReplicationStatus.Ok, crcs);
    }

    private async Task ControlAsync(FrameHeader h, ReadOnlyMemory<byte> body)
    {
        if (Volume(h) is not { } v)
        {
            return;
        }
        var req = JsonSerializer.Deserialize<ControlRequest>(body.Span, ReplicationNode.Json) ?? throw new ArgumentException("empty control request");
        await node.ApplyControlAsync(v, req).ConfigureAwait(false);
        Respond(h, ReplicationStatus.Ok);
    }

    private void Respond(FrameHeader h, ReplicationStatus status, string message) =>
        Respond(h, status, Encoding.UTF8.GetBytes(message));

    private void Respond(FrameHeader h, ReplicationStatus status, byte[]? data = null)
    {
        byte[] body;
        if (status == ReplicationStatus.Ok && data == null)
        {
            body = Ok;
        }
        else
        {
            body = new byte[4 + (data?.Length ?? 0)];
            BinaryPrimitives.WriteUInt32LittleEndian(body, (uint)status);
            data?.CopyTo(body, 4);
        }
        connection.Send(new OutFrame { Type = h.Type | FrameType.ResponseBit, Id = h.Id, Volume = h.Volume, Body = body });
    }

    internal static ReplicationStatus StatusOf(Exception e) => e switch
    {
        BlockVolumeException { Error: BlockError.Fenced } => ReplicationStatus.Fenced,
        BlockVolumeException { Error: BlockError.NoSpace } => ReplicationStatus.NoSpace,
        BlockVolumeException { Error: BlockError.Gone } => ReplicationStatus.Gone,
        BlockVolumeException { Error: BlockError.Io } => ReplicationStatus.Io,
        VolumeNotFoundException or KeyNotFoundException => ReplicationStatus.NotFound,
        _ => ReplicationStatus.Invalid,
    };
}
