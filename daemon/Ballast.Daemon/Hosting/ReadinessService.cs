using Ballast.Control;
using System.Net;
using System.Net.Sockets;
using Ballast.Daemon.Configuration;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Ballast.Daemon.Hosting;

/// <summary>
/// Tells systemd READY=1 and prints how to attach the volumes once the host has started: the
/// pool is open, every NBD listener is bound and so is the control API socket (Kestrel starts
/// after the hosted services, so READY=1 waits for ApplicationStarted; `systemctl start
/// ballastd && ballastctl ...` relies on it). Stops first: STOPPING=1.
/// </summary>
public sealed partial class ReadinessService(DaemonSettings settings, PoolService pool, NbdService nbd, SdNotify notify, IHostApplicationLifetime lifetime, ILogger<ReadinessService> log) : IHostedService
{
    public Task StartAsync(CancellationToken cancellationToken)
    {
        lifetime.ApplicationStarted.Register(AnnounceReady);
        return Task.CompletedTask;
    }

    private void AnnounceReady()
    {
        var volumes = pool.Pool.ListVolumes();
        notify.Notify($"READY=1\nSTATUS=serving {volumes.Count} volume(s) over NBD\nMAINPID={Environment.ProcessId}");
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
        Hint(log, "stop with Ctrl-C or SIGTERM: in-flight I/O finishes and the pool is checkpointed");
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
