using System.Text.RegularExpressions;
using Ballast.TestSupport;

namespace Ballast.Packaging.Tests;

/// <summary>
/// Builds the .deb once for the whole run with packaging/build-deb.sh (about a minute from
/// cold), and answers questions about it with dpkg-deb.
/// </summary>
[SetUpFixture]
public sealed partial class Package
{
    private static readonly TimeSpan BuildLimit = TimeSpan.FromMinutes(8);
    public static readonly TimeSpan Limit = TimeSpan.FromSeconds(60);

    /// <summary>The built package, artifacts/deb/ballast_VERSION_amd64.deb.</summary>
    public static string Deb { get; private set; } = "";

    public static string Script => Path.Combine(RepoPaths.Root, "packaging", "build-deb.sh");

    /// <summary>&lt;Version&gt; of Directory.Build.props.</summary>
    public static string Version =>
        VersionElement().Match(File.ReadAllText(Path.Combine(RepoPaths.Root, "Directory.Build.props"))).Groups[1].Value;

    private static Task<ScratchRoot>? _installed;

    [OneTimeSetUp]
    public async Task BuildOnce()
    {
        Deb = await BuildAsync();
    }

    [OneTimeTearDown]
    public async Task RemoveInstalled()
    {
        if (_installed is { IsCompletedSuccessfully: true })
        {
            (await _installed).Dispose();
        }
    }

    /// <summary>
    /// One scratch root with the package installed, shared by the fixtures that only read it or
    /// run its programs (each install unpacks the whole runtime, about 100 MB).
    /// </summary>
    public static Task<ScratchRoot> InstalledAsync() => _installed ??= ScratchRoot.InstallAsync();

    /// <summary>Runs the build script; returns the path it printed last.</summary>
    public static async Task<string> BuildAsync()
    {
        Tool.Require("dpkg-deb", "dpkg");
        Tool.Require("dotnet", "the .NET 10 SDK (dotnet-sdk-10.0)");
        // The output goes to a file, not a pipe: nothing the build leaves running can then
        // keep this test waiting for the end of its output.
        var log = Path.Combine(Path.GetTempPath(), $"ballast-build-deb-{Guid.NewGuid():N}.log");
        try
        {
            var r = await Tool.RunAsync("/bin/bash", ["-c", "exec \"$0\" >\"$1\" 2>&1", Script, log], BuildLimit);
            var output = File.ReadAllText(log);
            Assert.That(r.ExitCode, Is.Zero, $"packaging/build-deb.sh failed:\n{output}");
            var deb = output.TrimEnd().Split('\n')[^1];
            Assert.That(deb, Does.EndWith(".deb").And.Exist, $"the last line should name the package:\n{output}");
            return deb;
        }
        finally
        {
            File.Delete(log);
        }
    }

    /// <summary>dpkg-deb with the arguments, failing the test unless it exits 0.</summary>
    public static async Task<string> DpkgDebAsync(params string[] args) =>
        (await Tool.RunOkAsync(Tool.Require("dpkg-deb", "dpkg"), args, Limit)).Stdout;

    /// <summary>The paths in the package (./usr/bin/ballastd ...), with link targets as "path -> target".</summary>
    public static async Task<IReadOnlyList<Entry>> ContentsAsync()
    {
        var text = await DpkgDebAsync("--contents", Deb);
        return [.. text.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(Entry.Parse)];
    }

    /// <summary>One line of dpkg-deb --contents (tar's listing).</summary>
    public sealed record Entry(string Mode, string Owner, string Path, string? LinkTarget)
    {
        public static Entry Parse(string line)
        {
            var m = ContentsLine().Match(line);
            Assert.That(m.Success, Is.True, $"unexpected dpkg-deb --contents line: {line}");
            return new Entry(m.Groups["mode"].Value, m.Groups["owner"].Value, m.Groups["path"].Value,
                m.Groups["target"].Success ? m.Groups["target"].Value : null);
        }
    }

    [GeneratedRegex(@"<Version>([^<]+)</Version>")]
    private static partial Regex VersionElement();

    [GeneratedRegex(@"^(?<mode>\S+)\s+(?<owner>\S+)\s+\d+\s+\S+\s+\S+\s+(?<path>.+?)(?: -> (?<target>.+))?$")]
    private static partial Regex ContentsLine();
}
