using System.Net;
using Ballast.Daemon.Tests.Process;
using Ballast.TestSupport;

namespace Ballast.Daemon.Tests.Replication;

/// <summary>
/// Several ballastd nodes, each in a network namespace of its own (made here with ip netns and
/// veth pairs on a bridge), so links between them can be cut with iptables. The test process
/// reaches every node over the bridge at 10.88.0.254; node i is 10.88.0.i.
/// </summary>
public sealed class NetnsCluster : IAsyncDisposable
{
    public const string Bridge = "bl-br";
    private const string Prefix = "10.88.0.";
    private readonly string _dir;
    private readonly DaemonProcess?[] _daemons;

    private NetnsCluster(int count, string dir)
    {
        Count = count;
        _dir = dir;
        _daemons = new DaemonProcess?[count + 1];
    }

    public int Count { get; }

    public static string Ns(int i) => $"bl-n{i}";

    public static IPAddress Address(int i) => IPAddress.Parse(Prefix + i);

    public IPEndPoint Nbd(int i) => new(Address(i), 10809);

    public string ApiSocket(int i) => Path.Combine(_dir, $"n{i}", "api.sock");

    public DaemonProcess Daemon(int i) => _daemons[i] ?? throw new InvalidOperationException($"node {i} is not running");

    /// <summary>Per-node replication addresses; a test may route some through a proxy.</summary>
    public Dictionary<(int From, int To), string> Routes { get; } = [];

    public static async Task<NetnsCluster> CreateAsync(int count)
    {
        Tool.Require("ip", "iproute2");
        Tool.Require("iptables", "iptables");
        await CleanupAsync(count);
        var dir = Path.Combine(Path.GetTempPath(), "ballast-netns-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        await Sh($"ip link add {Bridge} type bridge && ip link set {Bridge} up && ip addr add {Prefix}254/24 dev {Bridge}");
        for (var i = 1; i <= count; i++)
        {
            await Sh($"ip netns add {Ns(i)} && ip netns exec {Ns(i)} ip link set lo up"
                + $" && ip link add blh{i} type veth peer name bln{i} && ip link set bln{i} netns {Ns(i)}"
                + $" && ip link set blh{i} master {Bridge} && ip link set blh{i} up"
                + $" && ip netns exec {Ns(i)} ip addr add {Prefix}{i}/24 dev bln{i} && ip netns exec {Ns(i)} ip link set bln{i} up");
        }
        return new NetnsCluster(count, dir);
    }

    private static async Task CleanupAsync(int count)
    {
        for (var i = 1; i <= Math.Max(count, 4); i++)
        {
            await Tool.RunAsync("ip", ["netns", "del", Ns(i)], TimeSpan.FromSeconds(30));
            await Tool.RunAsync("ip", ["link", "del", $"blh{i}"], TimeSpan.FromSeconds(30));
        }
        await Tool.RunAsync("ip", ["link", "del", Bridge], TimeSpan.FromSeconds(30));
    }

    public static async Task Sh(string command)
    {
        var r = await Tool.RunAsync("/bin/sh", ["-c", command], TimeSpan.FromSeconds(60));
        Assert.That(r.ExitCode, Is.Zero, $"{command}\n{r}");
    }

    /// <summary>Starts (or restarts) node i with every node in its membership; extra flags follow.</summary>
    public async Task<DaemonProcess> StartAsync(int i, params string[] extra)
    {
        var nodes = new List<string>();
        for (var j = 1; j <= Count; j++)
        {
            nodes.Add("--node");
            nodes.Add(Routes.TryGetValue((i, j), out var via) ? $"n{j}={via}" : $"n{j}={Prefix}{j}:7110");
        }
        var args = new List<string>
        {
            "--node-id", $"n{i}", "--replication-listen", $"{Prefix}{i}:7110", "--replica-timeout", "2", "--pool-size", "2GiB",
            "--api-socket", ApiSocket(i),
        };
        args.AddRange(nodes);
        args.AddRange(extra);
        var d = await DaemonProcess.StartReadyAsync(Path.Combine(_dir, $"n{i}"), args, port: 10809, listen: Prefix + i, netns: Ns(i));
        _daemons[i] = d;
        return d;
    }

    public async Task KillAsync(int i)
    {
        if (_daemons[i] is { } d)
        {
            await d.KillAsync();
            await d.DisposeAsync();
            _daemons[i] = null;
        }
    }

    /// <summary>Drops packets between node a and node b (both directions unless <paramref name="oneWay"/>: then only a to b).</summary>
    public static async Task CutAsync(int a, int b, bool oneWay = false)
    {
        await Sh($"ip netns exec {Ns(a)} iptables -A OUTPUT -d {Prefix}{b} -j DROP");
        if (!oneWay)
        {
            await Sh($"ip netns exec {Ns(a)} iptables -A INPUT -s {Prefix}{b} -j DROP");
        }
    }

    public async Task HealAsync()
    {
        for (var i = 1; i <= Count; i++)
        {
            await Sh($"ip netns exec {Ns(i)} iptables -F");
        }
    }

    public Task<Tool.Result> CtlAsync(int i, params string[] args) =>
        Tool.RunAsync("dotnet", [Path.Combine(AppContext.BaseDirectory, "ballastctl.dll"), "--socket", ApiSocket(i), .. args], TimeSpan.FromSeconds(120));

    public async ValueTask DisposeAsync()
    {
        for (var i = 1; i <= Count; i++)
        {
            if (_daemons[i] is { } d)
            {
                await d.StopAsync(TimeSpan.FromSeconds(30));
                await d.DisposeAsync();
            }
        }
        await CleanupAsync(Count);
        try
        {
            Directory.Delete(_dir, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
