using System.Runtime.InteropServices;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Ballast.Daemon.Hosting;

/// <summary>
/// ballastd has no reload, so SIGHUP (a terminal closing, or a habit of `kill -HUP`) must not end
/// it: by default it would exit without a checkpoint, and systemd treats that exit as clean and
/// does not restart it. The signal is logged and otherwise ignored.
/// </summary>
public sealed partial class HangupService(ILogger<HangupService> log) : IHostedService, IDisposable
{
    private PosixSignalRegistration? _registration;

    public Task StartAsync(CancellationToken cancellationToken)
    {
        _registration = PosixSignalRegistration.Create(PosixSignal.SIGHUP, context =>
        {
            context.Cancel = true;
            Ignored(log);
        });
        return Task.CompletedTask;
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public void Dispose() => _registration?.Dispose();

    [LoggerMessage(Level = LogLevel.Warning, Message = "SIGHUP ignored: ballastd does not reload its settings; restart it to apply a changed config file")]
    private static partial void Ignored(ILogger log);
}
