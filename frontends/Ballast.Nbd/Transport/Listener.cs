using System.Net;
using System.Net.Sockets;

namespace Ballast.Nbd.Transport;

/// <summary>A bound listening socket (TCP or Unix) and its accept loop.</summary>
internal sealed class Listener : IDisposable
{
    private readonly string? _unixPath;

    private Listener(Socket socket, EndPoint bound, string? unixPath)
    {
        Socket = socket;
        Bound = bound;
        _unixPath = unixPath;
    }

    public Socket Socket { get; }
    public EndPoint Bound { get; }
    public Task? AcceptLoop { get; set; }

    public static Listener Bind(EndPoint endpoint)
    {
        string? path = null;
        Socket socket;
        if (endpoint is UnixDomainSocketEndPoint unix)
        {
            path = unix.ToString();
            // A socket file left by a previous run would make bind fail; anything else is not ours to remove.
            if (Ballast.Engine.Interop.UnixFiles.IsSocket(path))
            {
                File.Delete(path);
            }
            socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        }
        else
        {
            socket = new Socket(endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
            socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
            if (endpoint.AddressFamily == AddressFamily.InterNetworkV6)
            {
                socket.DualMode = false;
            }
        }
        try
        {
            socket.Bind(endpoint);
            socket.Listen(512);
        }
        catch (SocketException e)
        {
            socket.Dispose();
            throw new InvalidOperationException($"NBD: cannot listen on {Describe(endpoint)}: {e.Message}", e);
        }
        return new Listener(socket, socket.LocalEndPoint ?? endpoint, path);
    }

    public static string Describe(EndPoint? endpoint) => endpoint switch
    {
        null => "",
        UnixDomainSocketEndPoint u => $"unix:{u}",
        IPEndPoint { AddressFamily: AddressFamily.InterNetworkV6 } ip => $"[{ip.Address}]:{ip.Port}",
        _ => endpoint.ToString() ?? "",
    };

    public void Dispose()
    {
        Socket.Dispose();
        if (_unixPath != null)
        {
            try
            {
                File.Delete(_unixPath);
            }
            catch (IOException)
            {
            }
            catch (UnauthorizedAccessException)
            {
            }
        }
    }
}
