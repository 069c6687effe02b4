using System.Net;
using System.Net.Sockets;
using Ballast.Control;
using Ballast.Daemon.Configuration;
using Ballast.Daemon.Hosting;
using Ballast.Iscsi.Naming;

namespace Ballast.Daemon.Api;

/// <summary>Where each volume is exported and who is connected, across the protocol servers.</summary>
public sealed class ExportCatalog(NbdService nbd, IscsiService iscsi, ServedVolumes served)
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
        var list = new List<ExportDto> { new("nbd", volume, addresses, volume) };
        if (iscsi.Target is { } target && iscsi.Options is { } options)
        {
            var portals = target.BoundEndpoints.Select(EndpointText.Format).ToList();
            list.Add(Iscsi(TargetNames.TargetName(options.IqnPrefix, volume), 0, volume, portals));
            foreach (var g in options.Groups)
            {
                for (var lun = 0; lun < g.Volumes.Count; lun++)
                {
                    if (g.Volumes[lun] == volume)
                    {
                        list.Add(Iscsi(TargetNames.TargetName(options.IqnPrefix, g.Name), lun, volume, portals));
                    }
                }
            }
        }
        return list;
    }

    private static ExportDto Iscsi(string iqn, int lun, string volume, IReadOnlyList<string> portals) =>
        new("iscsi", iqn, [.. portals.Select(p => $"iscsi://{p}/{iqn}/{lun}")], volume, lun, portals);

    public IReadOnlyList<ClientDto> Clients(string? volume = null)
    {
        var list = new List<ClientDto>();
        foreach (var c in nbd.Server.Connections)
        {
            if (c.Export != null && (volume == null || c.Export == volume))
            {
                list.Add(new ClientDto("nbd", c.Peer, c.Export, c.Since, c.Requests, c.BytesRead, c.BytesWritten));
            }
        }
        foreach (var s in iscsi.Target?.Sessions ?? [])
        {
            // Discovery sessions reach no volume; a group session is one client per LUN it uses.
            foreach (var lun in s.Luns)
            {
                if (volume == null || lun.Volume == volume)
                {
                    list.Add(new ClientDto("iscsi", s.Peer?.ToString() ?? "-", lun.Volume, s.Since, lun.Commands, lun.BytesRead, lun.BytesWritten, s.InitiatorName, s.TargetName));
                }
            }
        }
        return list;
    }

    /// <summary>Connections per protocol: NBD clients past the handshake, iSCSI sessions logged in to a target (not discovery).</summary>
    public (int Nbd, int Iscsi) Connections() =>
        (nbd.Server.Connections.Count(c => c.Export != null), iscsi.Target?.Sessions.Count(s => !s.Discovery) ?? 0);

    /// <summary>Closes every client of the volume, NBD and iSCSI (forced delete); returns how many.</summary>
    public int Disconnect(string volume) => nbd.Server.DisconnectVolume(volume) + (iscsi.Target?.DisconnectVolume(volume) ?? 0);
}
