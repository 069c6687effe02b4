using Ballast.TestSupport;

namespace Ballast.Packaging.Tests;

/// <summary>
/// An empty directory the package is installed into with <c>dpkg --root</c>. The maintainer
/// scripts run outside a chroot (<c>--force-script-chrootless</c>) with DPKG_ROOT set, the way
/// image builders install packages; they must act only inside the root.
/// </summary>
public sealed class ScratchRoot : IDisposable
{
    private ScratchRoot(string path) => Dir = path;

    public string Dir { get; }

    public static ScratchRoot Create()
    {
        if (Environment.UserName != "root")
        {
            Assert.Fail("installing with dpkg --root needs root: the package's files and the ballast user's directories get owners");
        }
        var dir = Path.Combine(Path.GetTempPath(), "ballast-root-" + Guid.NewGuid().ToString("N")[..10]);
        Directory.CreateDirectory(dir);
        return new ScratchRoot(dir);
    }

    /// <summary>A new root with the package installed.</summary>
    public static async Task<ScratchRoot> InstallAsync()
    {
        var root = Create();
        await root.DpkgOkAsync("--install", Package.Deb);
        return root;
    }

    /// <summary>An absolute path inside the root: <c>root["/etc/passwd"]</c>.</summary>
    public string this[string path] => Path.Combine(Dir, path.TrimStart('/'));

    /// <summary>
    /// dpkg acting on this root. The root has no libc6 or systemd packages of its own, so
    /// dependencies are not checked; the programs run against the host's libraries.
    /// </summary>
    public Task<Tool.Result> DpkgAsync(string[] args, IDictionary<string, string>? env = null) =>
        Tool.RunAsync(Tool.Require("dpkg", "dpkg"), ["--root=" + Dir, "--force-script-chrootless", "--force-depends", .. args], Package.Limit, env: env);

    public async Task<Tool.Result> DpkgOkAsync(params string[] args)
    {
        var r = await DpkgAsync(args);
        Assert.That(r.ExitCode, Is.Zero, $"dpkg --root {Dir} {string.Join(' ', args)}:\n{r}");
        return r;
    }

    /// <summary>The line of the root's /etc/passwd for a user, or null.</summary>
    public string[]? PasswdEntry(string user) =>
        File.Exists(this["/etc/passwd"])
            ? File.ReadAllLines(this["/etc/passwd"]).Select(l => l.Split(':')).FirstOrDefault(f => f[0] == user)
            : null;

    public void Dispose() => Directory.Delete(Dir, recursive: true);
}
