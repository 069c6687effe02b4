using System.Diagnostics;

namespace Ballast.TestSupport;

/// <summary>Runs a real client program with a time limit and captures what it printed.</summary>
public static class Tool
{
    public sealed record Result(int ExitCode, string Stdout, string Stderr)
    {
        public override string ToString() => $"exit {ExitCode}\nstdout:\n{Stdout}\nstderr:\n{Stderr}";
    }

    /// <summary>The program's path; fails the test naming the Debian package if it is missing.</summary>
    public static string Require(string program, string package)
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin:/bin").Split(':').Append("/usr/sbin").Append("/sbin"))
        {
            var p = Path.Combine(dir, program);
            if (File.Exists(p))
            {
                return p;
            }
        }
        Assert.Fail($"{program} is not installed: apt-get install {package} (scripts/install-test-deps.sh installs every test dependency)");
        return program;
    }

    public static async Task<Result> RunAsync(string program, IEnumerable<string> args, TimeSpan timeout, string? stdin = null, IDictionary<string, string>? env = null)
    {
        var psi = new ProcessStartInfo(program)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = stdin != null,
            UseShellExecute = false,
        };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }
        if (env != null)
        {
            foreach (var (k, v) in env)
            {
                psi.Environment[k] = v;
            }
        }
        using var p = Process.Start(psi) ?? throw new InvalidOperationException($"cannot start {program}");
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (stdin != null)
        {
            await p.StandardInput.WriteAsync(stdin);
            p.StandardInput.Close();
        }
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await p.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            p.Kill(entireProcessTree: true);
            Assert.Fail($"{Path.GetFileName(program)} {string.Join(' ', args)} did not finish within {timeout.TotalSeconds} s\nstdout: {await stdout}\nstderr: {await stderr}");
        }
        return new Result(p.ExitCode, await stdout, await stderr);
    }

    /// <summary>Runs and fails the test (with everything printed) unless the exit status is 0.</summary>
    public static async Task<Result> RunOkAsync(string program, IEnumerable<string> args, TimeSpan timeout, string? stdin = null, IDictionary<string, string>? env = null)
    {
        var r = await RunAsync(program, args, timeout, stdin, env);
        Assert.That(r.ExitCode, Is.Zero, $"{Path.GetFileName(program)} {string.Join(' ', args)} failed:\n{r}");
        return r;
    }
}
