using System.Net;
using System.Net.Sockets;
using Ballast.Daemon.Configuration;

namespace Ballast.Daemon.Hosting;

/// <summary>
/// Before the pool opens, each TCP address ballastd will listen on is bound once (as its server
/// binds it) and let go: a port another process holds then stops the start before the data
/// directory is touched, where a fresh one would be left holding a new pool file. The servers
/// bind for real later; a port taken in between still stops the start then, with the pool closed
/// cleanly.
/// </summary>
public static class ListenPreflight
{
    public static void Check(DaemonSettings settings)
    {
        foreach (var ep in settings.NbdListen)
        {
            // The NBD server binds IPv6 addresses IPv6-only (Listener) and names them [addr]:port.
            Try(ep, dualMode: false, e => $"NBD: cannot listen on {Describe(ep)}: {e.Message}");
        }
        foreach (var ep in settings.IscsiListen)
        {
            Try(ep, dualMode: IsV6Any(ep), e => $"iSCSI target: cannot listen on {ep}: {e.Message}");
        }
        if (settings.ReplicationListen is { } replication)
        {
            Try(replication, dualMode: false, e => $"cannot listen for replication on {replication}: {e.Message}");
        }
        foreach (var ep in settings.ApiListen)
        {
            Try(ep, dualMode: IsV6Any(ep), e => $"api-listen: cannot listen on {ep}: {e.Message}");
        }
    }

    private static bool IsV6Any(EndPoint ep) => ep is IPEndPoint { Address: var a } && a.Equals(IPAddress.IPv6Any);

    private static string Describe(EndPoint ep) => ep is IPEndPoint { AddressFamily: AddressFamily.InterNetworkV6 } v6 ? $"[{v6.Address}]:{v6.Port}" : ep.ToString() ?? "";

    private static void Try(EndPoint ep, bool dualMode, Func<SocketException, string> message)
    {
        // Unix sockets are checked by their servers (a stale file is removed there), and port 0
        // takes whatever is free.
        if (ep is not IPEndPoint { Port: > 0 } ip)
        {
            return;
        }
        using var socket = new Socket(ip.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        // As the servers do: a port in TIME_WAIT from ballastd's last run is not "in use".
        socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
        if (ip.AddressFamily == AddressFamily.InterNetworkV6)
        {
            socket.DualMode = dualMode;
        }
        try
        {
            socket.Bind(ip);
        }
        catch (SocketException e)
        {
            throw new InvalidOperationException(message(e), e);
        }
    }
}
