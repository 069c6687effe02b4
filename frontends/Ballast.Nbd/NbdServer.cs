using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Ballast.Engine.Volumes;
using Ballast.Nbd.Transport;
using Microsoft.Extensions.Logging;

namespace Ballast.Nbd;

/// <summary>
/// The NBD server: listeners on TCP and Unix sockets, one task per connection (handshake, then
/// transmission), limits on connections and on connections still negotiating. Volumes are
/// looked up per connection, so volumes created while the server runs are served at once.
/// </summary>
public sealed class NbdServer : IAsyncDisposable
{
    private readonly NbdServerOptions _options;
    private readonly IVolumeDirectory _volumes;
    private readonly ILogger _log;
    private readonly CancellationTokenSource _stop = new();
    private readonly List<Listener> _listeners = [];
    private readonly ConcurrentDictionary<long, NbdConnection> _connections = new();
    private readonly LinkedList<NbdConnection> _negotiating = new();
    private long _nextId;
    private int _stopped;

    public NbdServer(NbdServerOptions options, IVolumeDirectory volumes, ILoggerFactory loggers)
    {
        _options = options;
        _volumes = volumes;
        _log = loggers.CreateLogger("Ballast.Nbd");
    }

    /// <summary>Where the server listens (the real port when port 0 was asked for).</summary>
    public IReadOnlyList<EndPoint> BoundEndpoints => [.. _listeners.Select(l => l.Bound)];

    public IReadOnlyList<NbdConnectionInfo> Connections => [.. _connections.Values.Select(c => c.Describe())];

    /// <summary>Binds every listener (or none: a failure closes those already bound) and starts accepting.</summary>
    public Task StartAsync(CancellationToken ct)
    {
        _options.Validate();
        try
        {
            foreach (var ep in _options.Listen)
            {
                ct.ThrowIfCancellationRequested();
                _listeners.Add(Listener.Bind(ep));
            }
        }
        catch
        {
            foreach (var l in _listeners)
            {
                l.Dispose();
            }
            _listeners.Clear();
            throw;
        }
        foreach (var l in _listeners)
        {
            Log.Listening(_log, Listener.Describe(l.Bound));
            l.AcceptLoop = Task.Run(() => AcceptLoopAsync(l), CancellationToken.None);
        }
        return Task.CompletedTask;
    }

    private async Task AcceptLoopAsync(Listener listener)
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket socket;
            try
            {
                socket = await listener.Socket.AcceptAsync(_stop.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (_stop.IsCancellationRequested && e is OperationCanceledException or ObjectDisposedException or SocketException)
            {
                return;
            }
            catch (SocketException e)
            {
                // Out of file descriptors and the like: keep the listener, slow down.
                Log.AcceptFailed(_log, e, Listener.Describe(listener.Bound));
                await Task.Delay(100, CancellationToken.None).ConfigureAwait(false);
                continue;
            }
            Admit(socket);
        }
    }

    private void Admit(Socket socket)
    {
        var peer = Listener.Describe(socket.RemoteEndPoint) is { Length: > 0 } p ? p : "unix-client";
        if (_connections.Count >= _options.MaxConnections)
        {
            Log.ConnectionRefused(_log, peer, $"the server already has {_options.MaxConnections} connections");
            socket.Dispose();
            return;
        }
        var conn = new NbdConnection(Interlocked.Increment(ref _nextId), socket, peer);
        NbdConnection? evicted = null;
        lock (_negotiating)
        {
            if (_negotiating.Count >= _options.MaxHandshakes)
            {
                // Clients that never finish negotiating must not lock out those that do.
                evicted = _negotiating.First!.Value;
                _negotiating.RemoveFirst();
                evicted.Node = null;
            }
            conn.Node = _negotiating.AddLast(conn);
        }
        evicted?.Abort();
        _connections[conn.Id] = conn;
        conn.Task = Task.Run(() => ServeAsync(conn), CancellationToken.None);
    }

    private async Task ServeAsync(NbdConnection conn)
    {
        var socket = conn.Socket;
        var stream = new NetworkStream(socket, ownsSocket: true);
        Stream current = stream;
        try
        {
            if (socket.AddressFamily is AddressFamily.InterNetwork or AddressFamily.InterNetworkV6)
            {
                socket.NoDelay = true;
            }
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token, conn.Aborted);
            using var handshake = CancellationTokenSource.CreateLinkedTokenSource(linked.Token);
            handshake.CancelAfter(_options.HandshakeTimeout);
            var negotiation = new Handshake.Negotiation(stream, socket, _options, _volumes, _log, conn.Peer);
            Handshake.NegotiatedExport? export;
            try
            {
                export = await negotiation.RunAsync(handshake.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (!linked.IsCancellationRequested)
            {
                Log.HandshakeTimeout(_log, conn.Peer, _options.HandshakeTimeout.TotalSeconds);
                return;
            }
            finally
            {
                current = negotiation.Stream;
                LeaveNegotiating(conn);
            }
            if (export == null)
            {
                return;
            }
            var session = new Transmission.TransmissionSession(export, _options, _log, conn.Peer);
            conn.Started(export.Name, export.Tls, session);
            Log.Connected(_log, conn.Peer, export.Name, export.Structured ? "structured replies" : "simple replies", export.Tls ? ", TLS" : "");
            await session.RunAsync(linked.Token).ConfigureAwait(false);
            Log.Disconnected(_log, conn.Peer, export.Name, (DateTimeOffset.UtcNow - conn.Since).TotalSeconds,
                session.Requests, session.BytesRead, session.BytesWritten);
        }
        catch (Exception e) when (e is IOException or EndOfStreamException or OperationCanceledException or ObjectDisposedException or SocketException)
        {
            // The client went away or the connection was closed on purpose.
            Log.ConnectionLost(_log, conn.Peer, conn.Export ?? "(negotiating)", e.Message);
        }
        catch (Exception e)
        {
            Log.ConnectionFailed(_log, e, conn.Peer);
        }
        finally
        {
            LeaveNegotiating(conn);
            _connections.TryRemove(conn.Id, out _);
            await current.DisposeAsync().ConfigureAwait(false);
            await stream.DisposeAsync().ConfigureAwait(false);
        }
    }

    private void LeaveNegotiating(NbdConnection conn)
    {
        lock (_negotiating)
        {
            if (conn.Node != null)
            {
                _negotiating.Remove(conn.Node);
                conn.Node = null;
            }
        }
    }

    /// <summary>Closes every connection to <paramref name="volume"/> (after its in-flight requests finish); returns how many.</summary>
    public int DisconnectVolume(string volume)
    {
        var n = 0;
        foreach (var c in _connections.Values)
        {
            if (c.Export == volume)
            {
                c.Abort();
                n++;
            }
        }
        return n;
    }

    /// <summary>Stops accepting, lets in-flight requests finish (up to the drain timeout), closes every connection.</summary>
    public async Task StopAsync(CancellationToken ct)
    {
        if (Interlocked.Exchange(ref _stopped, 1) != 0)
        {
            return;
        }
        await _stop.CancelAsync().ConfigureAwait(false);
        foreach (var l in _listeners)
        {
            l.Dispose();
        }
        foreach (var l in _listeners)
        {
            if (l.AcceptLoop != null)
            {
                await l.AcceptLoop.ConfigureAwait(false);
            }
        }
        var all = _connections.Values.Select(c => c.Task).Where(t => t != null).Cast<Task>().ToArray();
        var drained = Task.WhenAll(all);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(_options.DrainTimeout);
        try
        {
            await drained.WaitAsync(timeout.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // Requests still running: close the sockets under them.
            foreach (var c in _connections.Values)
            {
                c.Socket.Dispose();
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync(CancellationToken.None).ConfigureAwait(false);
        _stop.Dispose();
    }
}
