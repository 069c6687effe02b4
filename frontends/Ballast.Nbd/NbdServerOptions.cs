using System.Net;
using System.Security.Cryptography.X509Certificates;

namespace Ballast.Nbd;

/// <summary>How the server treats TLS (doc/proto.md "TLS support").</summary>
public enum NbdTlsMode
{
    /// <summary>NOTLS: NBD_OPT_STARTTLS is refused with NBD_REP_ERR_POLICY.</summary>
    Off,
    /// <summary>SELECTIVETLS with every export available either way: clients may upgrade.</summary>
    On,
    /// <summary>FORCEDTLS: every option but STARTTLS and ABORT gets NBD_REP_ERR_TLS_REQD until TLS is up.</summary>
    Require,
}

/// <summary>Settings of the NBD server, with safe defaults. <see cref="Validate"/> runs at start.</summary>
public sealed record NbdServerOptions
{
    public const int DefaultPort = 10809;

    /// <summary>TCP endpoints (IPEndPoint) and Unix sockets (UnixDomainSocketEndPoint) to listen on.</summary>
    public IReadOnlyList<EndPoint> Listen { get; init; } = [new IPEndPoint(IPAddress.Loopback, DefaultPort)];

    /// <summary>Volume served to clients that ask for the default export name "" (none: such clients are refused).</summary>
    public string? DefaultExport { get; init; }

    public NbdTlsMode Tls { get; init; } = NbdTlsMode.Off;

    /// <summary>Server certificate with its private key; required unless <see cref="Tls"/> is Off.</summary>
    public X509Certificate2? TlsCertificate { get; init; }

    /// <summary>Connections open at once; more are closed at accept.</summary>
    public int MaxConnections { get; init; } = 1024;

    /// <summary>Connections still negotiating at once; when full, the oldest of them is closed to admit a new one.</summary>
    public int MaxHandshakes { get; init; } = 64;

    /// <summary>Time a client has from connect to the end of option haggling.</summary>
    public TimeSpan HandshakeTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>Largest READ or WRITE payload (advertised as the maximum block size). 32 MiB per the spec's advice.</summary>
    public int MaxPayload { get; init; } = 32 << 20;

    /// <summary>Largest option data accepted during the handshake; names and queries are at most 4096 bytes each.</summary>
    public int MaxOptionLength { get; init; } = 16 << 10;

    /// <summary>Requests a connection may have in flight; the server stops reading when it is reached.</summary>
    public int MaxInFlight { get; init; } = 128;

    /// <summary>How long stopping waits for in-flight requests before it closes connections anyway.</summary>
    public TimeSpan DrainTimeout { get; init; } = TimeSpan.FromSeconds(30);

    public void Validate()
    {
        if (Listen.Count == 0)
        {
            throw new ArgumentException("at least one NBD listen address is needed");
        }
        Check(MaxConnections, 1, 1 << 20, nameof(MaxConnections));
        Check(MaxHandshakes, 1, MaxConnections, nameof(MaxHandshakes));
        Check(MaxPayload, 1 << 20, 1 << 30, nameof(MaxPayload));
        Check(MaxOptionLength, 4096 + 64, 1 << 20, nameof(MaxOptionLength));
        Check(MaxInFlight, 1, 4096, nameof(MaxInFlight));
        if (HandshakeTimeout <= TimeSpan.Zero || DrainTimeout < TimeSpan.Zero)
        {
            throw new ArgumentOutOfRangeException(nameof(HandshakeTimeout), "timeouts must be positive");
        }
        if (Tls != NbdTlsMode.Off && (TlsCertificate == null || !TlsCertificate.HasPrivateKey))
        {
            throw new ArgumentException($"NBD TLS mode {Tls} needs a server certificate with its private key");
        }
    }

    private static void Check(int value, int min, int max, string name)
    {
        if (value < min || value > max)
        {
            throw new ArgumentOutOfRangeException(name, value, $"{name} must be between {min} and {max}");
        }
    }
}
