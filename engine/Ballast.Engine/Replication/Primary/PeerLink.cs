using System.Buffers;
using System.Buffers.Binary;
using System.Net.Sockets;
using System.Text;
using Ballast.Engine.Replication.Cluster;
using Ballast.Engine.Replication.Transport;
using Ballast.Engine.Replication.Wire;

namespace Ballast.Engine.Replication.Primary;

/// <summary>Receives one response; <paramref name="tag"/> is what the sender registered with the request.</summary>
internal interface IResponseSink
{
    /// <param name="received">Called from the link's receive loop, inside the batch it holds open
    /// (not from a failing link or a send that could not be made).</param>
    void OnResponse(ReplicationStatus status, ReadOnlySpan<byte> body, int tag, bool received);
}

/// <summary>
/// This node's connection to one peer, shared by every volume replicated there: reconnects
/// with backoff, matches responses to requests, and treats a request unanswered within the
/// timeout as a dead link (it closes, every pending request fails, and the replicas on it go
/// out of sync until they are resynced over the next connection).
/// </summary>
internal sealed class PeerLink : IAsyncDisposable
{
    private readonly NodeInfo _peer;
    private readonly string _self;
    private readonly TimeSpan _timeout;
    private readonly Action<PoolLogLevel, string>? _log;
    private readonly object _lock = new();
    private readonly Dictionary<ulong, (IResponseSink Sink, int Tag, long Sent)> _pending = [];
    private readonly CancellationTokenSource _stop = new();
    private FrameConnection? _connection;
    private ulong _nextId;
    private Task? _loop;

    public PeerLink(NodeInfo peer, string self, TimeSpan timeout, Action<PoolLogLevel, string>? log)
    {
        _peer = peer;
        _self = self;
        _timeout = timeout;
        _log = log;
    }

    public string PeerId => _peer.Id;

    /// <summary>Raised (on a pool thread) each time a connection is up and introduced; the argument changes per connection.</summary>
    public event Action<PeerLink>? Up;

    /// <summary>Raised when a connection is lost, after its pending requests failed.</summary>
    public event Action<PeerLink, string>? Down;

    public bool IsUp => Volatile.Read(ref _connection) != null;

    /// <summary>Bumps on every new connection: volume handles are per connection.</summary>
    public int Generation { get; private set; }

    public void Start() => _loop = Task.Run(RunAsync);

    private async Task RunAsync()
    {
        var backoff = TimeSpan.FromMilliseconds(200);
        while (!_stop.IsCancellationRequested)
        {
            FrameConnection? conn = null;
            try
            {
                var socket = new Socket(_peer.Address.AddressFamily, SocketType.Stream, _peer.Address.AddressFamily == AddressFamily.Unix ? ProtocolType.Unspecified : ProtocolType.Tcp);
                using (var connectTimeout = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token))
                {
                    connectTimeout.CancelAfter(TimeSpan.FromSeconds(5));
                    try
                    {
                        await socket.ConnectAsync(_peer.Address, connectTimeout.Token).ConfigureAwait(false);
                    }
                    catch
                    {
                        socket.Dispose();
                        throw;
                    }
                }
                conn = new FrameConnection(socket);
                conn.Start(OnFrameAsync);
                var hello = Encoding.UTF8.GetBytes(_self);
                lock (_lock)
                {
                    Volatile.Write(ref _connection, conn);
                    Generation++;
                }
                // Bounded: nothing else fails the hello if the connection drops before it is answered.
                var (status, _) = await CallAsync(new OutFrame { Type = FrameType.Hello, Body = hello }).WaitAsync(_timeout, conn.Closed).ConfigureAwait(false);
                if (status != ReplicationStatus.Ok)
                {
                    throw new IOException($"peer refused hello: {status}");
                }
                _log?.Invoke(PoolLogLevel.Information, $"replication: connected to node {_peer.Id} at {conn.Remote}");
                backoff = TimeSpan.FromMilliseconds(200);
                Up?.Invoke(this);
                await WatchAsync(conn).ConfigureAwait(false);
            }
            catch (Exception e) when (e is SocketException or IOException or OperationCanceledException or ObjectDisposedException or TimeoutException)
            {
                if (_stop.IsCancellationRequested)
                {
                    break;
                }
                _log?.Invoke(PoolLogLevel.Debug, $"replication: node {_peer.Id} unreachable: {e.Message}");
            }
            finally
            {
                if (conn != null)
                {
                    Fail(conn, conn.CloseReason ?? "connection ended");
                    await conn.DisposeAsync().ConfigureAwait(false);
                }
            }
            try
            {
                await Task.Delay(backoff, _stop.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                break;
            }
            backoff = TimeSpan.FromMilliseconds(Math.Min(2000, backoff.TotalMilliseconds * 2));
        }
    }

    /// <summary>Pings while idle and closes the connection when a request goes unanswered too long.</summary>
    private async Task WatchAsync(FrameConnection conn)
    {
        var tick = TimeSpan.FromMilliseconds(Math.Max(100, _timeout.TotalMilliseconds / 4));
        var lastPing = Environment.TickCount64;
        while (!conn.Closed.IsCancellationRequested)
        {
            try
            {
                await Task.Delay(tick, conn.Closed).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
            long oldest;
            lock (_lock)
            {
                oldest = _pending.Count == 0 ? long.MaxValue : _pending.Values.Min(p => p.Sent);
            }
            var now = Environment.TickCount64;
            if (now - oldest > _timeout.TotalMilliseconds)
            {
                conn.Close($"a request to node {_peer.Id} got no answer within {_timeout.TotalSeconds:0.#} s");
                return;
            }
            if (now - lastPing > _timeout.TotalMilliseconds / 2)
            {
                lastPing = now;
                Send(new OutFrame { Type = FrameType.Ping }, NullSink.Instance, 0);
            }
        }
    }

    /// <summary>Sends a request; false (sink not called) if the link is down.</summary>
    public bool Send(in OutFrame frame, IResponseSink sink, int tag)
    {
        lock (_lock)
        {
            var conn = _connection;
            if (conn == null)
            {
                return false;
            }
            var f = frame;
            f.Id = ++_nextId;
            _pending[f.Id] = (sink, tag, Environment.TickCount64);
            if (!conn.Send(f))
            {
                _pending.Remove(f.Id);
                return false;
            }
            return true;
        }
    }

    /// <summary>A request answered asynchronously; a down link answers <see cref="ReplicationStatus.Io"/>.</summary>
    public Task<(ReplicationStatus Status, byte[] Body)> CallAsync(OutFrame frame)
    {
        var sink = new TaskSink();
        if (!Send(frame, sink, 0))
        {
            return Task.FromResult((ReplicationStatus.Io, Encoding.UTF8.GetBytes($"node {_peer.Id} is not connected")));
        }
        return sink.Task;
    }

    private ValueTask OnFrameAsync(FrameHeader h, byte[] payload)
    {
        try
        {
            if (!h.IsResponse)
            {
                _connection?.Close("the peer sent a request on a primary's link");
                return default;
            }
            (IResponseSink Sink, int Tag, long Sent) p;
            lock (_lock)
            {
                if (!_pending.Remove(h.Id, out p))
                {
                    return default;
                }
            }
            var body = payload.AsSpan(0, h.Length);
            var status = body.Length >= 4 ? (ReplicationStatus)BinaryPrimitives.ReadUInt32LittleEndian(body) : ReplicationStatus.Invalid;
            p.Sink.OnResponse(status, body.Length >= 4 ? body[4..] : default, p.Tag, received: true);
            return default;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(payload);
        }
    }

    /// <summary>Fails every pending request of a connection that ended, then reports the link down.</summary>
    private void Fail(FrameConnection conn, string reason)
    {
        List<(IResponseSink Sink, int Tag, long Sent)> failed;
        lock (_lock)
        {
            if (!ReferenceEquals(_connection, conn))
            {
                return;
            }
            Volatile.Write(ref _connection, null);
            failed = [.. _pending.Values];
            _pending.Clear();
        }
        var msg = Encoding.UTF8.GetBytes(reason);
        foreach (var p in failed)
        {
            p.Sink.OnResponse(ReplicationStatus.Io, msg, p.Tag, received: false);
        }
        _log?.Invoke(PoolLogLevel.Warning, $"replication: link to node {_peer.Id} lost: {reason}");
        Down?.Invoke(this, reason);
    }

    /// <summary>Drops the current connection (tests and fencing); it reconnects.</summary>
    public void Disconnect(string reason) => Volatile.Read(ref _connection)?.Close(reason);

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        Volatile.Read(ref _connection)?.Close("shutting down");
        if (_loop != null)
        {
            await _loop.ConfigureAwait(false);
        }
        _stop.Dispose();
    }

    private sealed class TaskSink : IResponseSink
    {
        private readonly TaskCompletionSource<(ReplicationStatus, byte[])> _tcs = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public Task<(ReplicationStatus, byte[])> Task => _tcs.Task;

        public void OnResponse(ReplicationStatus status, ReadOnlySpan<byte> body, int tag, bool received) => _tcs.TrySetResult((status, body.ToArray()));
    }

    private sealed class NullSink : IResponseSink
    {
        public static readonly NullSink Instance = new();

        public void OnResponse(ReplicationStatus status, ReadOnlySpan<byte> body, int tag, bool received)
        {
        }
    }
}
