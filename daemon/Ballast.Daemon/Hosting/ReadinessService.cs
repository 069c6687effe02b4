using Ballast.Control;
using System.Net;
using System.Net.Sockets;
using Ballast.Daemon.Configuration;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Ballast.Daemon.Hosting;

/// <summary>
/// Tells systemd READY=1 and prints how to attach the volumes once the host has started: the
/// pool is open, NBD and iSCSI listeners are bound, and so is the control API (Kestrel starts
/// after the other hosted services, so READY waits for ApplicationStarted). Stops first: STOPPING=1.
/// </summary>
public sealed partial class ReadinessService(DaemonSettings settings, PoolService pool, NbdService nbd, IscsiService iscsi, SdNotify notify, IHostApplicationLifetime lifetime, ILogger<ReadinessService> log) : IHostedService
{
    public Task StartAsync(CancellationToken cancellationToken)
    {
        lifetime.ApplicationStarted.Register(Announce);
        return Task.CompletedTask;
    }

    private void Announce()
    {
        var volumes = pool.Pool.ListVolumes();
        var protocols = iscsi.Target != null ? "NBD and iSCSI" : "NBD";
        notify.Notify($"READY=1\nSTATUS=serving {volumes.Count} volume(s) over {protocols}\nMAINPID={Environment.ProcessId}");
        Ready(log, volumes.Count, settings.DataDir);
        foreach (var v in volumes)
        {
            VolumeLine(log, v.Name, SizeText.Format(v.Size), v.ReadOnly ? ", read-only" : "");
        }
        var example = volumes.FirstOrDefault(v => !v.ReadOnly)?.Name ?? volumes.FirstOrDefault()?.Name ?? "VOLUME";
        foreach (var ep in nbd.Server.BoundEndpoints)
        {
            switch (ep)
            {
                case IPEndPoint ip:
                    var host = ip.Address.Equals(IPAddress.Any) ? "127.0.0.1" : ip.Address.Equals(IPAddress.IPv6Any) ? "::1" : ip.Address.ToString();
                    var hostUri = ip.AddressFamily == AddressFamily.InterNetworkV6 ? $"[{host}]" : host;
                    Hint(log, $"attach with the Linux kernel: modprobe nbd && nbd-client {host} {ip.Port} /dev/nbd0 -N {example}");
                    Hint(log, $"inspect with libnbd: nbdinfo nbd://{hostUri}:{ip.Port}/{example}");
                    Hint(log, $"use from qemu: qemu-img info nbd://{hostUri}:{ip.Port}/{example}");
                    break;
                case UnixDomainSocketEndPoint u:
                    Hint(log, $"over the unix socket: nbdinfo 'nbd+unix:///{example}?socket={u}'");
                    break;
            }
        }
        IscsiHints(volumes.Count > 0 ? example : null);
        var socket = Path.GetFullPath(settings.ApiSocketPath);
        // The socket is bound by now, so ballastctl's lookup sees it if it would look there.
        Hint(log, socket == ControlClient.DefaultSocketPath()
            ? "manage with ballastctl: ballastctl volume list (ballastctl --help for the rest)"
            : $"manage with ballastctl: ballastctl --socket {socket} volume list (or export BALLAST_API_SOCKET={socket})");
        Hint(log, "stop with Ctrl-C or SIGTERM: in-flight I/O finishes and the pool is checkpointed");
    }

    /// <param name="example">A volume to show; null when there is none (the IQN then shows a placeholder).</param>
    private void IscsiHints(string? example)
    {
        if (iscsi.Target is not { } target || iscsi.Options is not { } options)
        {
            return;
        }
        var iqn = example != null ? Ballast.Iscsi.Naming.TargetNames.TargetName(options.IqnPrefix, example) : options.IqnPrefix + ":VOLUME";
        foreach (var ep in target.BoundEndpoints.OfType<IPEndPoint>())
        {
            var host = ep.Address.Equals(IPAddress.Any) ? "127.0.0.1" : ep.Address.Equals(IPAddress.IPv6Any) ? "::1" : ep.Address.ToString();
            // Port 3260 is the default everywhere, so the short forms work as printed.
            var portal = ep.AddressFamily == AddressFamily.InterNetworkV6 ? $"[{host}]:{ep.Port}" : $"{host}:{ep.Port}";
            var url = ep.Port == 3260 && ep.AddressFamily != AddressFamily.InterNetworkV6 ? $"iscsi://{host}/{iqn}/0" : $"iscsi://{portal}/{iqn}/0";
            Hint(log, $"iSCSI target {iqn}, LUN 0, portal {portal}");
            Hint(log, $"attach with open-iscsi: iscsiadm -m discovery -t sendtargets -p {portal} && iscsiadm -m node -T {iqn} -p {portal} --login");
            Hint(log, $"use from qemu: qemu-img info {url}");
            Hint(log, $"inspect with libiscsi: iscsi-inq {url}");
        }
        if (options.Chap != null)
        {
            Hint(log, $"iSCSI needs CHAP user {options.Chap.User}: iscsiadm -m node -T {iqn} -o update -n node.session.auth.authmethod -v CHAP (and node.session.auth.username/password); libiscsi URLs take iscsi://USER%SECRET@host/...");
        }
    }

    public Task StopAsync(CancellationToken cancellationToken)
    {
        notify.Notify("STOPPING=1\nSTATUS=draining I/O and closing the pool");
        Stopping(log);
        return Task.CompletedTask;
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "ballastd ready: {Count} volume(s) in {DataDir}")]
    private static partial void Ready(ILogger logger, int count, string dataDir);

    [LoggerMessage(Level = LogLevel.Information, Message = "  volume {Name}: {Size}{Mode}")]
    private static partial void VolumeLine(ILogger logger, string name, string size, string mode);

    [LoggerMessage(Level = LogLevel.Information, Message = "  {Hint}")]
    private static partial void Hint(ILogger logger, string hint);

    [LoggerMessage(Level = LogLevel.Information, Message = "ballastd stopping: draining in-flight I/O")]
    private static partial void Stopping(ILogger logger);
}
