using Ballast.Daemon.Configuration;
using Ballast.Iscsi;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Ballast.Daemon.Hosting;

/// <summary>
/// Runs the iSCSI target over the volumes this node serves (the same <see cref="ServedVolumes"/>
/// as NBD). Registered before <see cref="ReadinessService"/>, so READY=1 waits for its portals;
/// a portal that cannot be bound stops the start. Off when --iscsi-listen is off.
/// </summary>
public sealed partial class IscsiService(DaemonSettings settings, ServedVolumes volumes, ReplicationService replication, ILoggerFactory loggers, ILogger<IscsiService> log) : IHostedService
{
    private IscsiTarget? _target;

    /// <summary>The running target, or null when iSCSI is off.</summary>
    public IscsiTarget? Target => _target;

    public IscsiTargetOptions? Options { get; private set; }

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        if (!settings.IscsiEnabled)
        {
            Off(log);
            return;
        }
        Options = new IscsiTargetOptions
        {
            Listen = settings.IscsiListen,
            IqnPrefix = settings.IscsiIqnPrefix,
            Groups = settings.IscsiGroups,
            Chap = settings.IscsiChap.Credentials,
            MutualChap = settings.IscsiMutualChap.Credentials,
            StateDirectory = settings.IscsiStateDirectory,
            MaxConnections = settings.IscsiMaxConnections,
        };
        var target = new IscsiTarget(Options, volumes, loggers);
        try
        {
            await target.StartAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (ArgumentException e)
        {
            // The settings were checked at load; what is left is the state directory (permissions, a file in the way).
            throw new SettingsException(e.ParamName == nameof(IscsiTargetOptions.StateDirectory) ? "data-dir" : "iscsi-listen", e.Message);
        }
        _target = target;
        foreach (var g in Options.Groups)
        {
            // Not an error: the volumes may be created through the API later, and their LUNs appear then.
            var missing = g.Volumes.Where(v => volumes.Find(v) == null).ToList();
            if (missing.Count > 0)
            {
                GroupVolumesMissing(log, Ballast.Iscsi.Naming.TargetNames.TargetName(Options.IqnPrefix, g.Name), string.Join(", ", missing));
            }
        }
        if (Options.Chap != null)
        {
            ChapOn(log, Options.Chap.User, Options.MutualChap != null ? $", mutual CHAP as {Options.MutualChap.User}" : "");
        }
        // Another node took over a volume: its initiators here must go (their writes would be refused anyway).
        replication.VolumeDemoted += name => target.DisconnectVolume(name);
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (_target != null)
        {
            await _target.StopAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "iSCSI group target {Iqn}: no volume {Missing} in this pool (yet); those LUNs are missing until the volumes are created")]
    private static partial void GroupVolumesMissing(ILogger logger, string iqn, string missing);

    [LoggerMessage(Level = LogLevel.Information, Message = "iSCSI target off (--iscsi-listen off)")]
    private static partial void Off(ILogger logger);

    [LoggerMessage(Level = LogLevel.Information, Message = "iSCSI logins need CHAP as user {User}{Mutual}")]
    private static partial void ChapOn(ILogger logger, string user, string mutual);
}
