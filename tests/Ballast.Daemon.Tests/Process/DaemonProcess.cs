using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Ballast.TestSupport;
using Ballast.TestSupport.Interop;

namespace Ballast.Daemon.Tests.Process;

/// <summary>A ballastd process started by a test: its output, its NBD port, and ways to stop or kill it.</summary>
public sealed class DaemonProcess : IAsyncDisposable
{
    private readonly System.Diagnostics.Process _process;
    private readonly ConcurrentQueue<string> _lines = new();
    private readonly SemaphoreSlim _newLine = new(0);

    private DaemonProcess(System.Diagnostics.Process process, int port, int iscsiPort, IPAddress address)
    {
        _process = process;
        Port = port;
        IscsiPort = iscsiPort;
        Address = address;
        _process.OutputDataReceived += (_, e) => Add(e.Data);
        _process.ErrorDataReceived += (_, e) => Add(e.Data);
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
    }

    public int Port { get; }
    public IPAddress Address { get; }

    /// <summary>The iSCSI portal's port (0 when the test turned iSCSI off or chose its own).</summary>
    public int IscsiPort { get; }

    /// <summary>iscsi://ADDRESS:PORT/IQN/0 of a volume under the default IQN prefix (libiscsi tools and qemu take it).</summary>
    public string IscsiUrl(string volume, string? credentials = null) =>
        $"iscsi://{(credentials != null ? credentials + "@" : "")}{Address}:{IscsiPort}/{IscsiIqn(volume)}/0";

    public static string IscsiIqn(string volume) => Ballast.Iscsi.Naming.TargetNames.TargetName(Ballast.Iscsi.IscsiTargetOptions.DefaultIqnPrefix, volume);

    /// <summary>The control API socket (in the data directory unless the test chose one).</summary>
    public string ApiSocket { get; private init; } = "";

    /// <summary>One value from the daemon's /metrics text: a pool-wide series, or a volume's.</summary>
    public async Task<double> MetricAsync(string name, string? volume = null)
    {
        var r = await Tool.RunOkAsync("curl", ["-s", "--unix-socket", ApiSocket, "http://ballastd/metrics"], TimeSpan.FromSeconds(30));
        var prefix = volume == null ? $"{name} " : $"{name}{{volume=\"{volume}\"}} ";
        var line = r.Stdout.Split('\n').FirstOrDefault(l => l.StartsWith(prefix, StringComparison.Ordinal));
        Assert.That(line, Is.Not.Null, $"no {prefix} in /metrics");
        return double.Parse(line![prefix.Length..], System.Globalization.CultureInfo.InvariantCulture);
    }
    public int Pid => _process.Id;
    public IEnumerable<string> Lines => _lines;
    public string Output => string.Join('\n', _lines);
    public IPEndPoint Endpoint => new(Address, Port);

    /// <summary>The ballastd build next to the test assembly.</summary>
    public static string Binary => Path.Combine(AppContext.BaseDirectory, "ballastd.dll");

    public static int FreePort()
    {
        using var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        s.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)s.LocalEndPoint!).Port;
    }

    /// <summary>Starts ballastd with a data directory, an NBD port and an iSCSI port of its own (on <paramref name="listen"/>, default loopback), plus <paramref name="args"/>.</summary>
    public static DaemonProcess Start(string dataDir, IEnumerable<string> args, int? port = null, IDictionary<string, string>? env = null, string? listen = null, string? netns = null)
    {
        args = args.ToList();
        var p = port ?? FreePort();
        // In a network namespace, "ip netns exec" execs ballastd: the pid is ballastd's own.
        var psi = new ProcessStartInfo(netns == null ? "dotnet" : "ip")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        if (netns != null)
        {
            foreach (var a in new[] { "netns", "exec", netns, "dotnet" })
            {
                psi.ArgumentList.Add(a);
            }
        }
        psi.ArgumentList.Add(Binary);
        psi.ArgumentList.Add("--data-dir");
        psi.ArgumentList.Add(dataDir);
        psi.ArgumentList.Add("--nbd-listen");
        psi.ArgumentList.Add($"{listen ?? "127.0.0.1"}:{p}");
        // Tests run side by side: each daemon gets its own portal rather than 3260.
        var iscsiPort = 0;
        if (!args.Contains("--iscsi-listen"))
        {
            iscsiPort = FreePort();
            psi.ArgumentList.Add("--iscsi-listen");
            psi.ArgumentList.Add($"{listen ?? "127.0.0.1"}:{iscsiPort}");
        }
        if (!args.Contains("--pool-prepare-ahead"))
        {
            // Dozens of daemons start in a run: a small window keeps zeroing on but the suite's writes down.
            psi.ArgumentList.Add("--pool-prepare-ahead");
            psi.ArgumentList.Add("16MiB");
        }
        if (!args.Contains("--api-socket"))
        {
            psi.ArgumentList.Add("--api-socket");
            psi.ArgumentList.Add(Path.Combine(dataDir, "api.sock"));
        }
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }
        psi.Environment.Remove("NOTIFY_SOCKET");
        psi.Environment.Remove("JOURNAL_STREAM");
        if (env != null)
        {
            foreach (var (k, v) in env)
            {
                psi.Environment[k] = v;
            }
        }
        var list = args.ToList();
        var api = list.IndexOf("--api-socket") is var i and >= 0 ? list[i + 1] : Path.Combine(dataDir, "api.sock");
        return new DaemonProcess(System.Diagnostics.Process.Start(psi)!, p, iscsiPort, IPAddress.Parse(listen ?? "127.0.0.1")) { ApiSocket = api };
    }

    /// <summary>Starts ballastd and waits until it reports ready.</summary>
    public static async Task<DaemonProcess> StartReadyAsync(string dataDir, IEnumerable<string> args, int? port = null, IDictionary<string, string>? env = null, string? listen = null, string? netns = null)
    {
        var d = Start(dataDir, args, port, env, listen, netns);
        // The last line of the start-up banner.
        await d.WaitForAsync("stop with Ctrl-C", TimeSpan.FromSeconds(60));
        return d;
    }

    private void Add(string? line)
    {
        if (line != null)
        {
            _lines.Enqueue(line);
            _newLine.Release();
        }
    }

    public bool Has(string text) => _lines.Any(l => l.Contains(text, StringComparison.Ordinal));

    public async Task WaitForAsync(string text, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!Has(text))
        {
            if (_process.HasExited && !Has(text))
            {
                await Task.Delay(200);
                if (!Has(text))
                {
                    Assert.Fail($"ballastd exited ({_process.ExitCode}) before printing \"{text}\":\n{Output}");
                }
            }
            var left = deadline - DateTime.UtcNow;
            if (left <= TimeSpan.Zero)
            {
                Assert.Fail($"ballastd did not print \"{text}\" within {timeout.TotalSeconds} s:\n{Output}");
            }
            await _newLine.WaitAsync(left < TimeSpan.FromMilliseconds(500) ? left : TimeSpan.FromMilliseconds(500));
        }
    }

    public async Task<int> WaitForExitAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await _process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            Assert.Fail($"ballastd did not exit within {timeout.TotalSeconds} s:\n{Output}");
        }
        _process.WaitForExit();
        return _process.ExitCode;
    }

    /// <summary>SIGTERM, then waits for a clean exit.</summary>
    public async Task<int> StopAsync(TimeSpan? timeout = null)
    {
        if (!_process.HasExited)
        {
            Signals.Send(_process.Id, Signals.SigTerm);
        }
        return await WaitForExitAsync(timeout ?? TimeSpan.FromSeconds(60));
    }

    /// <summary>SIGKILL: the crash a power cut or OOM kill looks like to the daemon.</summary>
    public async Task KillAsync()
    {
        if (!_process.HasExited)
        {
            Signals.Send(_process.Id, Signals.SigKill);
        }
        await _process.WaitForExitAsync();
    }

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            await KillAsync();
        }
        _process.Dispose();
    }
}
