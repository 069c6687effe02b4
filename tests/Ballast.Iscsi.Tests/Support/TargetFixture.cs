using System.Collections.Concurrent;
using System.Net;
using Ballast.Engine;
using Microsoft.Extensions.Logging;

namespace Ballast.Iscsi.Tests.Support;

/// <summary>A pool in a temp directory with an iSCSI target serving it on 127.0.0.1 (ephemeral port).</summary>
public sealed class TargetFixture : IAsyncDisposable
{
    private TargetFixture(string dir, Pool pool)
    {
        Directory = dir;
        Pool = pool;
    }

    public string Directory { get; }
    public Pool Pool { get; }
    public IscsiTarget Target { get; private set; } = null!;
    public CapturingLoggerFactory Logs { get; } = new();
    public int Port => ((IPEndPoint)Target.BoundEndpoints[0]).Port;
    public string StateDirectory => Path.Combine(Directory, "state");

    public static string Iqn(string volume) => Naming.TargetNames.TargetName(IscsiTargetOptions.DefaultIqnPrefix, volume);

    public string Url(string volume, int lun = 0, string? user = null, string? secret = null) =>
        $"iscsi://{(user is null ? "" : $"{user}%{secret}@")}127.0.0.1:{Port}/{Iqn(volume)}/{lun}";

    /// <summary>Creates a volume and returns a raw initiator logged in to its target (default initiator name and keys).</summary>
    public async Task<RawInitiator> LoginToNewVolumeAsync(string volume, long size, int blockSize = 4096)
    {
        await Pool.CreateVolumeAsync(volume, size, blockSize);
        return await LoginAsync(volume);
    }

    /// <summary>A raw initiator logged in to the volume's target (default initiator name and keys).</summary>
    public async Task<RawInitiator> LoginAsync(string volume)
    {
        var c = await RawInitiator.ConnectAsync(Port);
        try
        {
            Assert.That(await c.LoginAsync(Iqn(volume)), Is.Zero);
            return c;
        }
        catch
        {
            await c.DisposeAsync();
            throw;
        }
    }

    public static async Task<TargetFixture> StartAsync(Func<TargetFixture, IscsiTargetOptions>? configure = null, long capacity = 1L << 30)
    {
        var dir = System.IO.Directory.CreateTempSubdirectory("ballast-iscsi-").FullName;
        var pool = await Pool.OpenAsync(new PoolOptions { Path = Path.Combine(dir, "pool"), Capacity = capacity });
        var f = new TargetFixture(dir, pool);
        await f.StartTargetAsync(configure);
        return f;
    }

    public async Task StartTargetAsync(Func<TargetFixture, IscsiTargetOptions>? configure = null)
    {
        var options = configure?.Invoke(this) ?? new IscsiTargetOptions { Listen = [new IPEndPoint(IPAddress.Loopback, 0)], StateDirectory = StateDirectory };
        Target = new IscsiTarget(options, Pool, Logs);
        await Target.StartAsync(CancellationToken.None);
    }

    /// <summary>Default options on an ephemeral loopback port; callers adjust with a <c>with</c>-style copy.</summary>
    public IscsiTargetOptions Defaults(ChapSecret? chap = null, ChapSecret? mutual = null, IReadOnlyList<IscsiGroupTarget>? groups = null,
        TimeSpan? loginTimeout = null, int maxConnections = 256, TimeSpan? nopInterval = null, TimeSpan? nopTimeout = null,
        IReadOnlyDictionary<string, ChapSecret>? targetChap = null) => new()
    {
        Listen = [new IPEndPoint(IPAddress.Loopback, 0)],
        StateDirectory = StateDirectory,
        Chap = chap,
        MutualChap = mutual,
        Groups = groups ?? [],
        LoginTimeout = loginTimeout ?? TimeSpan.FromSeconds(15),
        MaxConnections = maxConnections,
        NopInInterval = nopInterval ?? TimeSpan.FromSeconds(10),
        NopInTimeout = nopTimeout ?? TimeSpan.FromSeconds(15),
        TargetChap = targetChap ?? new Dictionary<string, ChapSecret>(),
    };

    public async Task StopTargetAsync()
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await Target.StopAsync(cts.Token);
    }

    public async ValueTask DisposeAsync()
    {
        await StopTargetAsync();
        await Pool.DisposeAsync();
        try
        {
            System.IO.Directory.Delete(Directory, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

/// <summary>Keeps every log line so tests can check what was (and was not) logged.</summary>
public sealed class CapturingLoggerFactory : ILoggerFactory
{
    public ConcurrentQueue<string> Lines { get; } = new();

    public void AddProvider(ILoggerProvider provider)
    {
    }

    public ILogger CreateLogger(string categoryName) => new Logger(this);

    public void Dispose()
    {
    }

    public string All => string.Join("\n", Lines);

    private sealed class Logger(CapturingLoggerFactory owner) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            var line = $"{logLevel}: {formatter(state, exception)}{(exception is null ? "" : " " + exception.Message)}";
            owner.Lines.Enqueue(line);
            if (logLevel >= LogLevel.Information && Environment.GetEnvironmentVariable("BALLAST_TEST_LOG") == "1")
            {
                TestContext.Progress.WriteLine(line);
            }
        }
    }
}
