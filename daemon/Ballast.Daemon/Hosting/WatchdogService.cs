using Ballast.Daemon.Api;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Ballast.Daemon.Hosting;

/// <summary>
/// systemd's watchdog, fed from the I/O path's health: WATCHDOG=1 is sent only while the pool
/// answers a probe through its appender (not merely because a timer fired), so a wedged or
/// failed write path gets the daemon restarted. Also refreshes STATUS= with what is served.
/// </summary>
public sealed partial class WatchdogService(SdNotify notify, PoolService pool, ExportCatalog exports, IHostApplicationLifetime lifetime, ILogger<WatchdogService> log) : BackgroundService
{
    /// <summary>The watchdog interval systemd asks for ($WATCHDOG_USEC, for this process), or null.</summary>
    public static TimeSpan? Interval()
    {
        if (!long.TryParse(Environment.GetEnvironmentVariable("WATCHDOG_USEC"), out var usec) || usec <= 0)
        {
            return null;
        }
        if (Environment.GetEnvironmentVariable("WATCHDOG_PID") is { Length: > 0 } pid && pid != Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture))
        {
            return null;
        }
        return TimeSpan.FromMicroseconds(usec);
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        if (!notify.Enabled)
        {
            return;
        }
        // READY=1 goes out when the host has started (ReadinessService); nothing is sent before it.
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using (lifetime.ApplicationStarted.Register(() => started.TrySetResult()))
        {
            await started.Task.WaitAsync(stoppingToken).ConfigureAwait(false);
        }
        var interval = Interval();
        // Ping at a third of the interval: two missed probes still leave time for a third.
        var period = interval is { } i ? i / 3 : TimeSpan.FromSeconds(10);
        using var timer = new PeriodicTimer(period);
        var wasHealthy = true;
        while (await timer.WaitForNextTickAsync(stoppingToken).ConfigureAwait(false))
        {
            if (!pool.IsOpen)
            {
                continue;
            }
            var healthy = await pool.Pool.ProbeAsync(period).ConfigureAwait(false);
            var volumes = pool.Pool.ListVolumes().Count;
            var (nbd, iscsi) = exports.Connections();
            var status = healthy
                ? $"STATUS=serving {volumes} volume(s), {nbd + iscsi} client(s) connected ({nbd} NBD, {iscsi} iSCSI)"
                : "STATUS=write path not answering or failed; see the log";
            notify.Notify(healthy && interval != null ? "WATCHDOG=1\n" + status : status);
            if (healthy != wasHealthy)
            {
                if (healthy)
                {
                    Recovered(log);
                }
                else
                {
                    Unhealthy(log, interval?.TotalSeconds ?? 0);
                }
                wasHealthy = healthy;
            }
        }
    }

    [LoggerMessage(Level = LogLevel.Error, Message = "the pool's write path failed a health probe; the watchdog is no longer fed (systemd restarts ballastd after {Seconds:0} s)")]
    private static partial void Unhealthy(ILogger logger, double seconds);

    [LoggerMessage(Level = LogLevel.Information, Message = "the pool's write path answers again; feeding the watchdog")]
    private static partial void Recovered(ILogger logger);
}
