using System.Net;
using System.Net.Sockets;
using Ballast.Engine.Replication.Transport;

namespace Ballast.Engine.Replication.Replica;

/// <summary>The replication listener: primaries connect here; each connection is a <see cref="ReplicaSession"/>.</summary>
internal sealed class ReplicaServer(ReplicationNode node, EndPoint listen, Action<PoolLogLevel, string>? log) : IAsyncDisposable
{
    private readonly CancellationTokenSource _stop = new();
    private readonly List<FrameConnection> _connections = [];
    private Socket? _socket;
    private Task? _accept;

    public EndPoint? Bound => _socket?.LocalEndPoint;

    public void Start()
    {
        var s = new Socket(listen.AddressFamily, SocketType.Stream, listen.AddressFamily == AddressFamily.Unix ? ProtocolType.Unspecified : ProtocolType.Tcp);
        try
        {
            if (listen.AddressFamily != AddressFamily.Unix)
            {
                s.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
            }
            s.Bind(listen);
            s.Listen(64);
        }
        catch (SocketException e)
        {
            s.Dispose();
            throw new InvalidOperationException($"cannot listen for replication on {listen}: {e.Message}", e);
        }
        _socket = s;
        _accept = Task.Run(AcceptLoopAsync);
    }

    private async Task AcceptLoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await _socket!.AcceptAsync(_stop.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or SocketException)
            {
                if (_stop.IsCancellationRequested)
                {
                    return;
                }
                await Task.Delay(100).ConfigureAwait(false);
                continue;
            }
            var conn = new FrameConnection(client);
            lock (_connections)
            {
                _connections.RemoveAll(c => c.Closed.IsCancellationRequested);
                _connections.Add(conn);
            }
            log?.Invoke(PoolLogLevel.Debug, $"replication: primary connected from {conn.Remote}");
            new ReplicaSession(conn, node).Start();
        }
    }

    /// <summary>Drops every primary's connection (they reconnect); tests use it to simulate a network blip.</summary>
    public void DropConnections(string reason)
    {
        lock (_connections)
        {
            foreach (var c in _connections)
            {
                c.Close(reason);
            }
            _connections.Clear();
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        _socket?.Dispose();
        if (_accept != null)
        {
            await _accept.ConfigureAwait(false);
        }
        DropConnections("shutting down");
        _stop.Dispose();
    }
}
