namespace Ballast.Packaging.Tests;

/// <summary>What the .deb holds and declares, read with dpkg-deb as an admin or an archive would read it.</summary>
[CancelAfter(120_000)]
public class PackageContentsTests
{
    private static readonly string[] Places =
    [
        "./etc/ballast/", "./lib/systemd/system/", "./usr/bin/", "./usr/lib/ballast/",
        "./usr/lib/sysusers.d/", "./usr/lib/tmpfiles.d/", "./usr/share/doc/ballast/",
    ];

    [Test]
    public void Package_file_is_named_for_the_version_in_Directory_Build_props()
    {
        Assert.That(Path.GetFileName(Package.Deb), Is.EqualTo($"ballast_{Package.Version.Replace('-', '~')}_amd64.deb"));
        Assert.That(Path.GetDirectoryName(Package.Deb), Is.SamePath(Path.Combine(Ballast.TestSupport.RepoPaths.Root, "artifacts", "deb")));
    }

    [Test]
    public async Task Control_declares_the_version_and_only_native_libraries_no_dotnet()
    {
        Assert.That((await Package.DpkgDebAsync("--field", Package.Deb, "Package")).Trim(), Is.EqualTo("ballast"));
        Assert.That((await Package.DpkgDebAsync("--field", Package.Deb, "Version")).Trim(), Is.EqualTo(Package.Version.Replace('-', '~')));
        Assert.That((await Package.DpkgDebAsync("--field", Package.Deb, "Architecture")).Trim(), Is.EqualTo("amd64"));
        var depends = await Package.DpkgDebAsync("--field", Package.Deb, "Depends");
        Assert.That(depends, Does.Contain("libc6").And.Contain("libssl3").And.Not.Contain("dotnet"));
    }

    [Test]
    public async Task Both_programs_share_one_self_contained_directory_linked_from_usr_bin()
    {
        var entries = (await Package.ContentsAsync()).ToDictionary(e => e.Path);
        foreach (var program in new[] { "ballastd", "ballastctl" })
        {
            Assert.That(entries, Does.ContainKey($"./usr/lib/ballast/{program}"));
            Assert.That(entries[$"./usr/lib/ballast/{program}"].Mode, Does.StartWith("-rwxr-xr-x"), $"{program} is executable");
            Assert.That(entries, Does.ContainKey($"./usr/lib/ballast/{program}.runtimeconfig.json"));
            Assert.That(entries, Does.ContainKey($"./usr/bin/{program}"));
            Assert.That(entries[$"./usr/bin/{program}"].LinkTarget, Is.EqualTo($"../lib/ballast/{program}"), "a relative link works in any root");
        }
        // The runtime itself, once for both.
        Assert.That(entries, Does.ContainKey("./usr/lib/ballast/libcoreclr.so"));
        Assert.That(entries, Does.ContainKey("./usr/lib/ballast/Microsoft.AspNetCore.dll"));
        Assert.That(entries.Keys.Count(p => p.EndsWith("/libcoreclr.so", StringComparison.Ordinal)), Is.EqualTo(1));
    }

    [Test]
    public async Task Unit_sysusers_tmpfiles_config_and_docs_are_where_Debian_looks_for_them()
    {
        var paths = (await Package.ContentsAsync()).Select(e => e.Path).ToList();
        Assert.That(paths, Is.SupersetOf(new[]
        {
            "./lib/systemd/system/ballastd.service",
            "./usr/lib/sysusers.d/ballast.conf",
            "./usr/lib/tmpfiles.d/ballast.conf",
            "./etc/ballast/ballastd.json",
            "./usr/share/doc/ballast/copyright",
            "./usr/share/doc/ballast/README.md",
        }));
        var stray = paths.Where(p => !p.EndsWith('/') && !Places.Any(p.StartsWith)).ToList();
        Assert.That(stray, Is.Empty, "files outside the install layout");
    }

    [Test]
    public async Task Every_file_belongs_to_root_whoever_built_the_package()
    {
        var notRoot = (await Package.ContentsAsync()).Where(e => e.Owner != "root/root").Select(e => $"{e.Owner} {e.Path}");
        Assert.That(notRoot, Is.Empty);
    }

    [Test]
    public async Task Pool_directory_is_not_in_the_package_so_dpkg_never_deletes_it()
    {
        var paths = (await Package.ContentsAsync()).Select(e => e.Path);
        Assert.That(paths.Where(p => p.StartsWith("./var/", StringComparison.Ordinal)), Is.Empty);
    }

    [Test]
    public async Task Default_config_is_listed_as_a_conffile()
    {
        var conffiles = await Package.DpkgDebAsync("--info", Package.Deb, "conffiles");
        Assert.That(conffiles.Split('\n', StringSplitOptions.RemoveEmptyEntries), Is.EqualTo(new[] { "/etc/ballast/ballastd.json" }));
    }

    [Test]
    public async Task Maintainer_scripts_are_shipped_executable()
    {
        var info = await Package.DpkgDebAsync("--info", Package.Deb);
        foreach (var script in new[] { "postinst", "prerm", "postrm" })
        {
            // dpkg-deb --info marks executable control members with '*'.
            Assert.That(info, Does.Match($@"\d+ lines\s+\*\s+{script}\s"), info);
        }
    }
}
