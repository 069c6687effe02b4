using System.Net.Sockets;
using System.Text;

namespace Ballast.Daemon.Hosting;

/// <summary>
/// The systemd notification protocol: one datagram of "KEY=value" lines to $NOTIFY_SOCKET
/// (a path, or an abstract socket when it starts with '@'). Does nothing outside systemd.
/// </summary>
public sealed class SdNotify : IDisposable
{
    private readonly Socket? _socket;
    private readonly UnixDomainSocketEndPoint? _target;

    public SdNotify(string? notifySocket)
    {
        if (string.IsNullOrEmpty(notifySocket) || (notifySocket[0] != '/' && notifySocket[0] != '@'))
        {
            return;
        }
        // An abstract address is written with a leading NUL on the wire.
        _target = new UnixDomainSocketEndPoint(notifySocket[0] == '@' ? "\0" + notifySocket[1..] : notifySocket);
        _socket = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
    }

    public static SdNotify FromEnvironment() => new(Environment.GetEnvironmentVariable("NOTIFY_SOCKET"));

    public bool Enabled => _socket != null;

    /// <summary>Sends the state lines; false if not under systemd or the send failed (never throws).</summary>
    public bool Notify(string state)
    {
        if (_socket == null || _target == null)
        {
            return false;
        }
        try
        {
            _socket.SendTo(Encoding.UTF8.GetBytes(state), SocketFlags.None, _target);
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }

    public void Dispose() => _socket?.Dispose();
}
