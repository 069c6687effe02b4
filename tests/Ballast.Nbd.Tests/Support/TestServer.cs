using System.Net;
using Ballast.Engine;
using Ballast.Engine.Volumes;

using Ballast.TestSupport;

namespace Ballast.Nbd.Tests.Support;

/// <summary>
/// An NBD server in the test process over a real pool in a temporary directory: volume "v1"
/// (64 MiB), "v2" (16 MiB, 512-byte blocks) and the read-only snapshot "v1@snap".
/// </summary>
public sealed class TestServer : IAsyncDisposable
{
    private readonly string _dir;

    private TestServer(string dir, Pool pool, NbdServer server, TestLoggerFactory log)
    {
        _dir = dir;
        Pool = pool;
        Server = server;
        Log = log;
    }

    public Pool Pool { get; }
    public NbdServer Server { get; }
    public TestLoggerFactory Log { get; }
    public IPEndPoint Endpoint => (IPEndPoint)Server.BoundEndpoints[0];
    public int Port => Endpoint.Port;

    public string Uri(string export) => $"nbd://127.0.0.1:{Port}/{export}";

    public static async Task<TestServer> StartAsync(Func<NbdServerOptions, NbdServerOptions>? configure = null)
    {
        var dir = Path.Combine(Path.GetTempPath(), "ballast-nbd-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(dir);
        var pool = await Pool.OpenAsync(new PoolOptions { Path = Path.Combine(dir, "pool.dat"), Capacity = 512L << 20 });
        await pool.CreateVolumeAsync("v1", 64L << 20);
        await pool.CreateVolumeAsync("v2", 16L << 20, logicalBlockSize: 512);
        var v1 = pool.OpenVolume("v1");
        await v1.WriteAsync(0, Enumerable.Repeat((byte)0x5a, 1 << 20).ToArray(), WriteFlags.None);
        await pool.CreateSnapshotAsync("v1", "snap");
        var options = new NbdServerOptions { Listen = [new IPEndPoint(IPAddress.Loopback, 0)] };
        options = configure?.Invoke(options) ?? options;
        var log = new TestLoggerFactory();
        var server = new NbdServer(options, pool, log);
        try
        {
            await server.StartAsync(CancellationToken.None);
        }
        catch
        {
            await pool.DisposeAsync();
            Directory.Delete(dir, recursive: true);
            throw;
        }
        return new TestServer(dir, pool, server, log);
    }

    public async ValueTask DisposeAsync()
    {
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var open = Server.Connections;
        await Server.DisposeAsync();
        if (sw.ElapsedMilliseconds > 2000)
        {
            TestContext.Progress.WriteLine($"server stop took {sw.ElapsedMilliseconds} ms with connections: {string.Join("; ", open)}");
        }
        await Pool.DisposeAsync();
        try
        {
            Directory.Delete(_dir, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
