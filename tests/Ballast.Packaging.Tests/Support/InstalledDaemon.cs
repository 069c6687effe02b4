using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Ballast.TestSupport.Interop;

namespace Ballast.Packaging.Tests;

/// <summary>The ballastd of a scratch root, started as an admin would start it by hand: its output, its ports, a clean stop.</summary>
public sealed class InstalledDaemon : IAsyncDisposable
{
    private readonly Process _process;
    private readonly ConcurrentQueue<string> _lines = new();

    private InstalledDaemon(Process process)
    {
        _process = process;
        _process.OutputDataReceived += (_, e) => Add(e.Data);
        _process.ErrorDataReceived += (_, e) => Add(e.Data);
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
    }

    public string Output => string.Join('\n', _lines);

    public bool Has(string text) => _lines.Any(l => l.Contains(text, StringComparison.Ordinal));

    public static int FreePort()
    {
        using var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        s.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)s.LocalEndPoint!).Port;
    }

    public int Pid => _process.Id;

    /// <param name="workingDirectory">Where it runs; systemd starts services in "/" unless told otherwise.</param>
    public static InstalledDaemon Start(string program, IEnumerable<string> args, IDictionary<string, string>? env = null, string? workingDirectory = null)
    {
        var psi = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        if (workingDirectory != null)
        {
            psi.WorkingDirectory = workingDirectory;
        }
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }
        // Started by hand, not by systemd: no notify socket or journal unless the test gives one.
        psi.Environment.Remove("NOTIFY_SOCKET");
        psi.Environment.Remove("JOURNAL_STREAM");
        foreach (var (k, v) in env ?? new Dictionary<string, string>())
        {
            psi.Environment[k] = v;
        }
        return new InstalledDaemon(Process.Start(psi) ?? throw new InvalidOperationException($"cannot start {program}"));
    }

    public async Task WaitForAsync(string text, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!Has(text))
        {
            if (_process.HasExited)
            {
                await Task.Delay(200);
                Assert.That(Has(text), Is.True, $"ballastd exited ({_process.ExitCode}) before printing \"{text}\":\n{Output}");
                return;
            }
            Assert.That(DateTime.UtcNow, Is.LessThan(deadline), $"ballastd did not print \"{text}\" within {timeout.TotalSeconds} s:\n{Output}");
            await Task.Delay(100);
        }
    }

    /// <summary>SIGTERM, as systemctl stop sends it; returns the exit code.</summary>
    public async Task<int> StopAsync(TimeSpan timeout)
    {
        if (!_process.HasExited)
        {
            Signals.Send(_process.Id, Signals.SigTerm);
        }
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await _process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            Assert.Fail($"ballastd did not exit within {timeout.TotalSeconds} s of SIGTERM:\n{Output}");
        }
        _process.WaitForExit();
        return _process.ExitCode;
    }

    private void Add(string? line)
    {
        if (line != null)
        {
            _lines.Enqueue(line);
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            // The whole tree: a wrapper (setpriv, strace) killed alone would leave ballastd
            // running, holding the output pipe this process waits to see closed.
            _process.Kill(entireProcessTree: true);
            await _process.WaitForExitAsync();
        }
        _process.Dispose();
    }
}
