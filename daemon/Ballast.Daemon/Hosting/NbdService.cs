using System.Security.Cryptography.X509Certificates;
using Ballast.Daemon.Configuration;
using Ballast.Nbd;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Ballast.Daemon.Hosting;

/// <summary>Runs the NBD server over the pool's volumes; on stop, in-flight requests finish before the pool closes.</summary>
public sealed class NbdService(DaemonSettings settings, ServedVolumes volumes, ReplicationService replication, ILoggerFactory loggers) : IHostedService
{
    private NbdServer? _server;

    public NbdServer Server => _server ?? throw new InvalidOperationException("the NBD server is not running");

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        X509Certificate2? certificate = null;
        if (settings.NbdTls != NbdTlsMode.Off)
        {
            try
            {
                certificate = X509Certificate2.CreateFromPemFile(settings.NbdTlsCertificate!, settings.NbdTlsKey);
            }
            catch (Exception e) when (e is IOException or System.Security.Cryptography.CryptographicException or UnauthorizedAccessException)
            {
                throw new SettingsException("nbd-tls-certificate", $"cannot load {settings.NbdTlsCertificate} with key {settings.NbdTlsKey}: {e.Message}");
            }
        }
        _server = new NbdServer(new NbdServerOptions
        {
            Listen = settings.NbdListen,
            DefaultExport = settings.NbdDefaultExport,
            Tls = settings.NbdTls,
            TlsCertificate = certificate,
            MaxConnections = settings.NbdMaxConnections,
            MaxHandshakes = Math.Min(64, settings.NbdMaxConnections),
            HandshakeTimeout = settings.NbdHandshakeTimeout,
        }, volumes, loggers);
        await _server.StartAsync(cancellationToken).ConfigureAwait(false);
        // Another node took over a volume: its clients here must go (their writes would be refused anyway).
        replication.VolumeDemoted += name => _server.DisconnectVolume(name);
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (_server != null)
        {
            await _server.StopAsync(cancellationToken).ConfigureAwait(false);
        }
    }
}
