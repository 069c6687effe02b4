using System.Net;
using System.Net.Sockets;
using Ballast.Control;
using Ballast.Daemon.Configuration;
using Ballast.Daemon.Hosting;

namespace Ballast.Daemon.Api;

/// <summary>Where each volume is exported and who is connected, across the protocol servers.</summary>
public sealed class ExportCatalog(NbdService nbd, ServedVolumes served)
{
    public IReadOnlyList<ExportDto> ExportsOf(string volume)
    {
        if (served.Find(volume) == null)
        {
            // A replica here, its primary elsewhere: clients attach on the primary.
            return [];
        }
        var addresses = nbd.Server.BoundEndpoints.Select(ep => ep switch
        {
            UnixDomainSocketEndPoint u => $"nbd+unix:///{volume}?socket={u}",
            IPEndPoint { AddressFamily: AddressFamily.InterNetworkV6 } ip => $"nbd://[{ip.Address}]:{ip.Port}/{volume}",
            IPEndPoint ip => $"nbd://{ip.Address}:{ip.Port}/{volume}",
            _ => EndpointText.Format(ep),
        }).ToList();
        return [new ExportDto("nbd", volume, addresses)];
    }

    public IReadOnlyList<ClientDto> Clients(string? volume = null) =>
    [
        .. nbd.Server.Connections
            .Where(c => c.Export != null && (volume == null || c.Export == volume))
            .Select(c => new ClientDto("nbd", c.Peer, c.Export!, c.Since, c.Requests, c.BytesRead, c.BytesWritten)),
    ];

    /// <summary>Closes every client of the volume (forced delete); returns how many.</summary>
    public int Disconnect(string volume) => nbd.Server.DisconnectVolume(volume);
}
