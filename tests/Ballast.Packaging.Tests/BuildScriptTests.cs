using Ballast.TestSupport;

namespace Ballast.Packaging.Tests;

/// <summary>packaging/build-deb.sh: runs again without leftovers, and says what is missing.</summary>
[CancelAfter(300_000)]
public class BuildScriptTests
{
    private string _bin = null!;

    [SetUp]
    public void SetUp()
    {
        _bin = Path.Combine(Path.GetTempPath(), "ballast-bin-" + Guid.NewGuid().ToString("N")[..10]);
        Directory.CreateDirectory(_bin);
        // The script needs dirname before it looks for its tools.
        File.CreateSymbolicLink(Path.Combine(_bin, "dirname"), Tool.Require("dirname", "coreutils"));
    }

    [TearDown]
    public void TearDown() => Directory.Delete(_bin, recursive: true);

    /// <summary>The script with PATH holding only the programs linked into the test's bin directory.</summary>
    private async Task<Tool.Result> RunWithOnlyAsync() =>
        await Tool.RunAsync("/bin/bash", [Package.Script], Package.Limit, env: new Dictionary<string, string> { ["PATH"] = _bin });

    [Test]
    public async Task Building_again_gives_a_package_with_the_same_files()
    {
        var before = (await Package.ContentsAsync()).Select(e => (e.Path, e.Mode, e.LinkTarget)).ToList();
        var deb = await Package.BuildAsync();
        Assert.That(deb, Is.EqualTo(Package.Deb));
        var after = (await Package.ContentsAsync()).Select(e => (e.Path, e.Mode, e.LinkTarget)).ToList();
        Assert.That(after, Is.EqualTo(before));
    }

    [Test]
    public async Task Without_dotnet_the_build_stops_naming_the_SDK()
    {
        var r = await RunWithOnlyAsync();
        Assert.That(r.ExitCode, Is.Not.Zero, r.ToString());
        Assert.That(r.Stderr, Does.Contain("dotnet not found").And.Contain(".NET 10 SDK"), r.ToString());
    }

    [Test]
    public async Task Without_dpkg_deb_the_build_stops_naming_the_Debian_package()
    {
        File.CreateSymbolicLink(Path.Combine(_bin, "dotnet"), Tool.Require("dotnet", "the .NET 10 SDK (dotnet-sdk-10.0)"));
        var r = await RunWithOnlyAsync();
        Assert.That(r.ExitCode, Is.Not.Zero, r.ToString());
        Assert.That(r.Stderr, Does.Contain("dpkg-deb not found").And.Contain("apt-get install dpkg"), r.ToString());
    }
}
