using System.Diagnostics;
using System.Text;

namespace Ballast.Iscsi.Tests.Support;

/// <summary>
/// Runs external tools (libiscsi utilities, qemu-img, the VM harness) with a timeout. Unlike
/// <see cref="Ballast.TestSupport.Tool.RunAsync"/> it interleaves stdout and stderr, streams lines
/// (VM progress) and reports a timeout as a result instead of failing the test.
/// </summary>
public static class Tools
{
    /// <summary>Fails the test with the Debian package to install when a tool is missing.</summary>
    public static string Require(string tool, string package) => Ballast.TestSupport.Tool.Require(tool, package);

    public sealed record Result(int ExitCode, string Output)
    {
        public override string ToString() => $"exit {ExitCode}\n{Output}";
    }

    public static async Task<Result> RunAsync(string file, IEnumerable<string> args, TimeSpan timeout, string? workingDirectory = null, Action<string>? onLine = null)
    {
        var psi = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory ?? Path.GetTempPath(),
        };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }
        var output = new StringBuilder();
        using var p = new Process { StartInfo = psi };
        void OnData(object s, DataReceivedEventArgs e)
        {
            if (e.Data is null)
            {
                return;
            }
            lock (output)
            {
                output.AppendLine(e.Data);
            }
            onLine?.Invoke(e.Data);
        }
        p.OutputDataReceived += OnData;
        p.ErrorDataReceived += OnData;
        p.Start();
        p.StandardInput.Close();
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await p.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            p.Kill(entireProcessTree: true);
            await p.WaitForExitAsync();
            lock (output)
            {
                return new Result(-1, output + $"\n[timed out after {timeout}]");
            }
        }
        p.WaitForExit();
        lock (output)
        {
            return new Result(p.ExitCode, output.ToString());
        }
    }

    /// <summary>The repository root (for tests/vm).</summary>
    public static string RepoRoot() => Ballast.TestSupport.RepoPaths.Root;
}
