using System.Net;
using System.Net.Sockets;

namespace Ballast.TestSupport;

/// <summary>
/// A TCP proxy that tests put between two nodes to hurt the link the way networks do (this
/// kernel has no netem): added delay per chunk, a stall that forwards nothing, and resets.
/// </summary>
public sealed class FaultProxy : IAsyncDisposable
{
    private readonly Socket _listener;
    private readonly EndPoint _target;
    private readonly CancellationTokenSource _stop = new();
    private readonly List<(Socket A, Socket B)> _pairs = [];
    private readonly Task _accept;

    public FaultProxy(IPEndPoint listen, EndPoint target)
    {
        _target = target;
        _listener = new Socket(listen.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        _listener.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
        _listener.Bind(listen);
        _listener.Listen(16);
        Listen = (IPEndPoint)_listener.LocalEndPoint!;
        _accept = Task.Run(AcceptAsync);
    }

    public IPEndPoint Listen { get; }

    /// <summary>Delay added before each forwarded chunk.</summary>
    public TimeSpan Delay { get; set; }

    /// <summary>While set, nothing is forwarded either way (connections stay open: a black hole).</summary>
    public bool Stalled { get; set; }

    public long Connections;

    /// <summary>Aborts every connection with a TCP reset.</summary>
    public void ResetAll()
    {
        lock (_pairs)
        {
            foreach (var (a, b) in _pairs)
            {
                Abort(a);
                Abort(b);
            }
            _pairs.Clear();
        }
    }

    private static void Abort(Socket s)
    {
        try
        {
            s.LingerState = new LingerOption(true, 0);
        }
        catch (Exception e) when (e is ObjectDisposedException or SocketException)
        {
            // Already closed by its pump.
        }
        s.Dispose();
    }

    private async Task AcceptAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket a;
            try
            {
                a = await _listener.AcceptAsync(_stop.Token);
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or SocketException)
            {
                return;
            }
            var b = new Socket(_target.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
            try
            {
                await b.ConnectAsync(_target, _stop.Token);
            }
            catch (Exception e) when (e is SocketException or OperationCanceledException)
            {
                a.Dispose();
                b.Dispose();
                continue;
            }
            Interlocked.Increment(ref Connections);
            lock (_pairs)
            {
                _pairs.Add((a, b));
            }
            _ = PumpAsync(a, b);
            _ = PumpAsync(b, a);
        }
    }

    private async Task PumpAsync(Socket from, Socket to)
    {
        var buf = new byte[64 * 1024];
        try
        {
            while (!_stop.IsCancellationRequested)
            {
                var n = await from.ReceiveAsync(buf, SocketFlags.None, _stop.Token);
                if (n == 0)
                {
                    break;
                }
                while (Stalled && !_stop.IsCancellationRequested)
                {
                    await Task.Delay(20, _stop.Token);
                }
                if (Delay > TimeSpan.Zero)
                {
                    await Task.Delay(Delay, _stop.Token);
                }
                await to.SendAsync(buf.AsMemory(0, n), SocketFlags.None, _stop.Token);
            }
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException or OperationCanceledException)
        {
        }
        finally
        {
            from.Dispose();
            to.Dispose();
            lock (_pairs)
            {
                _pairs.RemoveAll(p => p.A == from || p.B == from);
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Dispose();
        ResetAll();
        await _accept;
        _stop.Dispose();
    }
}
