using Ballast.Control;
using Ballast.Daemon.Configuration;
using Ballast.Engine;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Ballast.Daemon.Hosting;

/// <summary>
/// Opens the pool in the data directory, creates the configured volumes, and closes the pool
/// (final checkpoint) last. Also closed when the host is disposed without being stopped: a start
/// that fails after the pool opened (a port in use) runs no StopAsync, and a pool left open is
/// taken for a crash next time, which scrubs the whole pool.
/// </summary>
public sealed partial class PoolService(DaemonSettings settings, ILogger<PoolService> log) : IHostedService, IAsyncDisposable
{
    private Pool? _pool;

    public Pool Pool => _pool ?? throw new InvalidOperationException("the pool is not open yet");

    /// <summary>True between a successful start and the start of stopping.</summary>
    public bool IsOpen => Volatile.Read(ref _open);

    public string PoolPath => settings.PoolPath;

    private bool _open;
    private int _closed;

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        PathProblem.CreateDirectory("data-dir", settings.DataDir);
        if (!OperatingSystem.IsWindows())
        {
            File.SetUnixFileMode(settings.DataDir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }
        _pool = await Pool.OpenAsync(new PoolOptions
        {
            Path = settings.PoolPath,
            Capacity = settings.PoolSize,
            PrepareAheadBytes = settings.PoolPrepareAhead,
            Log = OnPoolLog,
        }).ConfigureAwait(false);
        var stats = _pool.GetStats();
        // The engine has already logged what recovery found (the same words would come twice).
        PoolOpened(log, settings.PoolPath, Format(stats.CapacityBytes), stats.Segments, Format(stats.SegmentSize));
        foreach (var v in settings.Volumes)
        {
            if (_pool.TryOpenVolume(v.Name, out var existing))
            {
                if (existing.Size != v.Size)
                {
                    VolumeSizeDiffers(log, v.Name, Format(existing.Size), Format(v.Size));
                }
                continue;
            }
            await _pool.CreateVolumeAsync(v.Name, v.Size, v.BlockSize).ConfigureAwait(false);
            VolumeCreated(log, v.Name, Format(v.Size), v.BlockSize);
        }
        Volatile.Write(ref _open, true);
    }

    public Task StopAsync(CancellationToken cancellationToken) => CloseAsync();

    public ValueTask DisposeAsync() => new(CloseAsync());

    private async Task CloseAsync()
    {
        Volatile.Write(ref _open, false);
        if (_pool is { } pool && Interlocked.Exchange(ref _closed, 1) == 0)
        {
            await pool.DisposeAsync().ConfigureAwait(false);
            PoolClosed(log, settings.PoolPath);
        }
    }

    private void OnPoolLog(PoolLogLevel level, string message)
    {
        var l = level switch
        {
            PoolLogLevel.Debug => LogLevel.Debug,
            PoolLogLevel.Information => LogLevel.Information,
            PoolLogLevel.Warning => LogLevel.Warning,
            _ => LogLevel.Error,
        };
        PoolMessage(log, l, message);
    }

    private static string Format(long bytes) => SizeText.Format(bytes);

    [LoggerMessage(Level = LogLevel.Information, Message = "pool {Path}: {Capacity} in {Segments} segments of {SegmentSize}")]
    private static partial void PoolOpened(ILogger logger, string path, string capacity, int segments, string segmentSize);

    [LoggerMessage(Level = LogLevel.Information, Message = "pool {Path}: closed cleanly")]
    private static partial void PoolClosed(ILogger logger, string path);

    [LoggerMessage(Level = LogLevel.Information, Message = "volume {Name}: created, {Size}, {BlockSize}-byte blocks")]
    private static partial void VolumeCreated(ILogger logger, string name, string size, int blockSize);

    [LoggerMessage(Level = LogLevel.Warning, Message = "volume {Name} exists with size {Existing}, not the {Asked} asked for at start; leaving it as it is")]
    private static partial void VolumeSizeDiffers(ILogger logger, string name, string existing, string asked);

    [LoggerMessage(Message = "{Message}")]
    private static partial void PoolMessage(ILogger logger, LogLevel level, string message);
}
