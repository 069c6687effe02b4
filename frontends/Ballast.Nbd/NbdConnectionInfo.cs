namespace Ballast.Nbd;

/// <summary>One client connection as status and metrics show it.</summary>
public sealed record NbdConnectionInfo(
    long Id,
    string Peer,
    string? Export,
    bool Tls,
    DateTimeOffset Since,
    long Requests,
    long BytesRead,
    long BytesWritten,
    int InFlight);
