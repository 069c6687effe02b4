using System.Net.Sockets;
using Ballast.Nbd.Transmission;

namespace Ballast.Nbd.Transport;

/// <summary>The server's record of one client connection: what status shows and how to close it.</summary>
internal sealed class NbdConnection(long id, Socket socket, string peer)
{
    private readonly CancellationTokenSource _abort = new();
    private TransmissionSession? _session;

    public long Id { get; } = id;
    public Socket Socket { get; } = socket;
    public string Peer { get; } = peer;
    public DateTimeOffset Since { get; } = DateTimeOffset.UtcNow;
    public string? Export { get; private set; }
    public bool Tls { get; private set; }
    public Task? Task { get; set; }

    /// <summary>Its place among connections still negotiating, or null.</summary>
    public LinkedListNode<NbdConnection>? Node { get; set; }

    public CancellationToken Aborted => _abort.Token;

    public void Started(string export, bool tls, TransmissionSession session)
    {
        Export = export;
        Tls = tls;
        _session = session;
    }

    /// <summary>Ends the connection: no new requests are read, in-flight ones still get replies.</summary>
    public void Abort()
    {
        try
        {
            _abort.Cancel();
        }
        catch (ObjectDisposedException)
        {
        }
    }

    public NbdConnectionInfo Describe() => new(Id, Peer, Export, Tls, Since,
        _session?.Requests ?? 0, _session?.BytesRead ?? 0, _session?.BytesWritten ?? 0, _session?.InFlight ?? 0);
}
