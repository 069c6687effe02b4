using System.Net;
using System.Net.Sockets;
using Ballast.Engine.Volumes;
using Ballast.Iscsi.Reservations;
using Ballast.Iscsi.Session;
using Ballast.Iscsi.Transport;
using Microsoft.Extensions.Logging;

namespace Ballast.Iscsi;

/// <summary>
/// The iSCSI target: every volume of the directory as target <c>&lt;prefix&gt;:&lt;volume&gt;</c> with
/// LUN 0, plus configured group targets. Volumes are looked up at login and discovery time, so
/// volumes created or deleted while it runs come and go without a restart.
/// </summary>
public sealed class IscsiTarget : IAsyncDisposable
{
    private readonly IscsiTargetOptions _options;
    private readonly IVolumeDirectory _volumes;
    private readonly ILoggerFactory _loggers;
    private readonly ILogger _log;
    private readonly List<Socket> _listeners = [];
    private readonly List<Task> _acceptLoops = [];
    private readonly List<Task> _connectionTasks = [];
    private TargetContext? _context;
    private Timer? _timer;
    private CancellationTokenSource? _stop;
    private int _state; // 0 new, 1 started, 2 stopped

    public IscsiTarget(IscsiTargetOptions options, IVolumeDirectory volumes, ILoggerFactory loggers)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(volumes);
        ArgumentNullException.ThrowIfNull(loggers);
        _options = options;
        _volumes = volumes;
        _loggers = loggers;
        _log = loggers.CreateLogger("Ballast.Iscsi");
    }

    /// <summary>The endpoints actually bound (real ports when port 0 was asked for).</summary>
    public IReadOnlyList<EndPoint> BoundEndpoints => _context is null ? [] : [.. _context.Portals];

    /// <summary>Logged-in sessions (normal and discovery).</summary>
    public IReadOnlyList<IscsiSessionInfo> Sessions
    {
        get
        {
            if (_context is null)
            {
                return [];
            }
            var list = new List<IscsiSessionInfo>();
            foreach (var s in _context.Sessions())
            {
                list.Add(s.Describe(s.Connection?.Peer));
            }
            return list;
        }
    }

    /// <summary>Binds every listener or throws naming the address that failed, then accepts connections.</summary>
    public Task StartAsync(CancellationToken ct)
    {
        if (Interlocked.CompareExchange(ref _state, 1, 0) != 0)
        {
            throw new InvalidOperationException("the iSCSI target was already started");
        }
        try
        {
            Start(ct);
        }
        catch
        {
            _context = null;
            Volatile.Write(ref _state, 0); // nothing runs; Start may be called again, Stop is a no-op
            throw;
        }
        return Task.CompletedTask;
    }

    private void Start(CancellationToken ct)
    {
        _options.Validate();
        ReservationStore? store = null;
        if (!string.IsNullOrEmpty(_options.StateDirectory))
        {
            try
            {
                store = new ReservationStore(_options.StateDirectory);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new ArgumentException($"StateDirectory: cannot use {_options.StateDirectory}: {e.Message}", nameof(IscsiTargetOptions.StateDirectory), e);
            }
        }
        var units = new LogicalUnitRegistry(store, _options.MaxTransferLength, _log);
        _context = new TargetContext(_options, _volumes, _loggers, units);
        try
        {
            foreach (var ep in _options.Listen)
            {
                ct.ThrowIfCancellationRequested();
                var ip = (IPEndPoint)ep;
                var socket = new Socket(ip.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
                try
                {
                    socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
                    if (ip.AddressFamily == AddressFamily.InterNetworkV6 && ip.Address.Equals(IPAddress.IPv6Any))
                    {
                        socket.DualMode = true;
                    }
                    socket.Bind(ip);
                    socket.Listen(512);
                }
                catch (SocketException e)
                {
                    socket.Dispose();
                    throw new IOException($"iSCSI target: cannot listen on {ip}: {e.Message}", e);
                }
                _listeners.Add(socket);
                _context.Portals.Add((IPEndPoint)socket.LocalEndPoint!);
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
        _stop = new CancellationTokenSource();
        foreach (var l in _listeners)
        {
            _acceptLoops.Add(Task.Run(() => AcceptLoopAsync(l), CancellationToken.None));
        }
        _timer = new Timer(_ => Tick(), null, TimeSpan.FromMilliseconds(500), TimeSpan.FromMilliseconds(500));
        _log.LogInformation("iSCSI target listening on {Portals} (targets {Prefix}:<volume>)", string.Join(", ", _context.Portals), _options.IqnPrefix);
    }

    private async Task AcceptLoopAsync(Socket listener)
    {
        var context = _context!;
        while (true)
        {
            Socket socket;
            try
            {
                socket = await listener.AcceptAsync(_stop!.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException)
            {
                return;
            }
            catch (SocketException e)
            {
                if (context.Stopping)
                {
                    return;
                }
                _log.LogWarning("iSCSI accept on {Portal} failed: {Message}", listener.LocalEndPoint, e.Message);
                await Task.Delay(100).ConfigureAwait(false);
                continue;
            }
            socket.NoDelay = true;
            var connection = new IscsiConnection(context, socket);
            if (!context.TryAddConnection(connection))
            {
                _log.LogWarning("iSCSI connection from {Peer} refused: {Max} connections are open", socket.RemoteEndPoint, _options.MaxConnections);
                socket.Dispose();
                continue;
            }
            var run = connection.RunAsync();
            lock (_connectionTasks)
            {
                _connectionTasks.RemoveAll(t => t.IsCompleted);
                _connectionTasks.Add(run);
            }
        }
    }

    private void Tick()
    {
        var context = _context;
        if (context is null)
        {
            return;
        }
        var now = Environment.TickCount64;
        foreach (var c in context.Connections())
        {
            try
            {
                c.Tick(now);
            }
            catch (Exception e)
            {
                _log.LogError(e, "iSCSI housekeeping failed for {Peer}", c.Peer);
            }
        }
    }

    /// <summary>Closes every session that uses the volume (e.g. before a forced delete); returns how many.</summary>
    public int DisconnectVolume(string volumeName)
    {
        if (_context is null)
        {
            return 0;
        }
        var count = 0;
        foreach (var s in _context.Sessions())
        {
            if (s.VolumeNames.Contains(volumeName, StringComparer.Ordinal))
            {
                _log.LogInformation("iSCSI: closing the session of {Initiator} to {Target}: volume {Volume} is being disconnected", s.InitiatorName, s.TargetName, volumeName);
                _ = s.Connection?.CloseAsync();
                count++;
            }
        }
        return count;
    }

    /// <summary>Stops accepting, lets running commands finish (bounded by <paramref name="ct"/>), closes every connection.</summary>
    public async Task StopAsync(CancellationToken ct)
    {
        if (Interlocked.Exchange(ref _state, 2) != 1 || _context is not { } context)
        {
            return;
        }
        context.Stopping = true;
        _stop!.Cancel();
        foreach (var l in _listeners)
        {
            l.Dispose();
        }
        await Task.WhenAll(_acceptLoops).ConfigureAwait(false);
        if (_timer != null)
        {
            await _timer.DisposeAsync().ConfigureAwait(false);
        }
        foreach (var c in context.Connections())
        {
            await c.DrainAsync(ct).ConfigureAwait(false);
        }
        foreach (var c in context.Connections())
        {
            await c.CloseAsync().ConfigureAwait(false);
        }
        Task[] running;
        lock (_connectionTasks)
        {
            running = [.. _connectionTasks];
        }
        try
        {
            await Task.WhenAll(running).WaitAsync(ct).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            _log.LogWarning("iSCSI target stop: connections still closing when the stop was cancelled");
        }
        _stop.Dispose();
        _log.LogInformation("iSCSI target stopped");
    }

    public async ValueTask DisposeAsync()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await StopAsync(cts.Token).ConfigureAwait(false);
    }
}
