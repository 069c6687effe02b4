using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using Ballast.Daemon.Tests.Process;
using Ballast.TestSupport;

namespace Ballast.Daemon.Tests.Iscsi;

/// <summary>
/// ballastd's iSCSI target as an operator meets it: real initiators (libiscsi tools, qemu) against a
/// started daemon, CHAP from the config file, and start-up refusals that name the setting.
/// </summary>
[CancelAfter(300_000)]
public class DaemonIscsiTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(120);
    private string _dir = null!;

    [SetUp]
    public void SetUp()
    {
        _dir = Path.Combine(Path.GetTempPath(), "ballastd-iscsi-" + Guid.NewGuid().ToString("N")[..10]);
        Directory.CreateDirectory(_dir);
    }

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    private string DataDir => Path.Combine(_dir, "data");

    private static string Inq => Tool.Require("iscsi-inq", "libiscsi-bin");

    [Test]
    public async Task Serves_a_volume_to_iscsi_inq_readcapacity16_and_qemu_img()
    {
        await using var d = await DaemonProcess.StartReadyAsync(DataDir, ["--volume", "disk:32MiB:512", "--pool-size", "1GiB"]);
        Assert.That(d.Has($"iscsi-inq iscsi://127.0.0.1:{d.IscsiPort}/iqn.2026-11.io.ballast:disk/0"), Is.True, d.Output);
        Assert.That(d.Has($"iscsiadm -m discovery -t sendtargets -p 127.0.0.1:{d.IscsiPort}"), Is.True, d.Output);

        var inq = await Tool.RunOkAsync(Inq, [d.IscsiUrl("disk")], Limit);
        Assert.That(inq.Stdout, Does.Contain("Peripheral Device Type:DIRECT_ACCESS"));
        var cap = await Tool.RunOkAsync(Tool.Require("iscsi-readcapacity16", "libiscsi-bin"), [d.IscsiUrl("disk")], Limit);
        Assert.That(cap.Stdout, Does.Contain("RETURNED LOGICAL BLOCK ADDRESS:65535").And.Contain("LOGICAL BLOCK LENGTH IN BYTES:512"), "32 MiB of 512-byte blocks");

        // Random data in through iSCSI, compared back through iSCSI and through NBD.
        var image = Path.Combine(_dir, "random.img");
        var bytes = new byte[32 << 20];
        new Random(7).NextBytes(bytes);
        await File.WriteAllBytesAsync(image, bytes);
        var qemuImg = Tool.Require("qemu-img", "qemu-utils");
        var before = await d.MetricAsync("ballast_volume_write_bytes_total", "disk");
        await Tool.RunOkAsync(qemuImg, ["convert", "-n", "-f", "raw", "-O", "raw", image, d.IscsiUrl("disk")], Limit);
        await Tool.RunOkAsync(qemuImg, ["compare", "-f", "raw", "-F", "raw", image, d.IscsiUrl("disk")], Limit);
        await Tool.RunOkAsync(qemuImg, ["compare", "-f", "raw", "-F", "raw", image, $"nbd://127.0.0.1:{d.Port}/disk"], Limit);
        Assert.That(await d.MetricAsync("ballast_volume_write_bytes_total", "disk") - before, Is.EqualTo(32L << 20), "iSCSI writes land in the volume's own counters");
        Assert.That(await d.StopAsync(), Is.Zero, d.Output);
    }

    [Test]
    public async Task Chap_from_the_config_file_lets_the_right_initiator_in_and_refuses_a_wrong_secret()
    {
        const string secret = "initiator-secret-42";
        const string targetSecret = "target-secret-4242";
        var targetSecretFile = Path.Combine(_dir, "target.secret");
        await File.WriteAllTextAsync(targetSecretFile, targetSecret + "\n");
        File.SetUnixFileMode(targetSecretFile, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        var config = Path.Combine(_dir, "ballastd.json");
        await File.WriteAllTextAsync(config, $$"""
            {
              "volume": ["guarded:16MiB"],
              "pool-size": "1GiB",
              "iscsi-chap-user": "alice",
              "iscsi-chap-secret": "{{secret}}",
              "iscsi-mutual-chap-user": "ballast",
              "iscsi-mutual-chap-secret-file": "{{targetSecretFile}}"
            }
            """);
        File.SetUnixFileMode(config, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        await using var d = await DaemonProcess.StartReadyAsync(DataDir, ["--config", config]);
        Assert.That(d.Has("iSCSI logins need CHAP as user alice, mutual CHAP as ballast"), Is.True, d.Output);

        var ok = await Tool.RunOkAsync(Inq, [d.IscsiUrl("guarded", $"alice%{secret}")], Limit);
        Assert.That(ok.Stdout, Does.Contain("DIRECT_ACCESS"));
        // Mutual: the initiator checks the target's answer against the secret it expects.
        await Tool.RunOkAsync(Inq, [d.IscsiUrl("guarded", $"alice%{secret}") + $"?target_user=ballast&target_password={targetSecret}"], Limit);
        var fakeTarget = await Tool.RunAsync(Inq, [d.IscsiUrl("guarded", $"alice%{secret}") + "?target_user=ballast&target_password=not-the-target-secret"], Limit);
        Assert.That(fakeTarget.ExitCode, Is.Not.Zero, "the initiator refuses a target that does not know the mutual secret\n" + fakeTarget);

        var wrong = await Tool.RunAsync(Inq, [d.IscsiUrl("guarded", "alice%wrong-secret-0000")], Limit);
        Assert.That(wrong.ExitCode, Is.Not.Zero, wrong.ToString());
        Assert.That(wrong.Stdout + wrong.Stderr, Does.Contain("Authentication failure").IgnoreCase.Or.Contain("Login Failed"));
        var none = await Tool.RunAsync(Inq, [d.IscsiUrl("guarded")], Limit);
        Assert.That(none.ExitCode, Is.Not.Zero, "no credentials, no login\n" + none);
        var discovery = await Tool.RunAsync(Tool.Require("iscsi-ls", "libiscsi-bin"), [$"iscsi://127.0.0.1:{d.IscsiPort}"], Limit);
        Assert.That(discovery.ExitCode, Is.Not.Zero, "discovery needs CHAP too\n" + discovery);
        var listed = await Tool.RunOkAsync("iscsi-ls", [$"iscsi://alice%{secret}@127.0.0.1:{d.IscsiPort}"], Limit);
        Assert.That(listed.Stdout, Does.Contain("iqn.2026-11.io.ballast:guarded"));

        Assert.That(await d.StopAsync(), Is.Zero, d.Output);
        Assert.That(d.Output, Does.Not.Contain(secret).And.Not.Contain(targetSecret), "secrets are never logged");
        var help = await Tool.RunOkAsync("dotnet", [DaemonProcess.Binary, "--help"], Limit);
        Assert.That(help.Stdout, Does.Contain("--iscsi-chap-secret-file").And.Not.Contain(secret));
    }

    [Test]
    public async Task A_group_target_from_the_config_file_carries_its_volumes_as_luns()
    {
        var config = Path.Combine(_dir, "ballastd.json");
        await File.WriteAllTextAsync(config, """
            {
              "volume": ["db-data:16MiB", "db-log:8MiB:512"],
              "pool-size": "1GiB",
              "iscsiGroups": [{"name": "db", "volumes": ["db-data", "db-log"]}]
            }
            """);
        await using var d = await DaemonProcess.StartReadyAsync(DataDir, ["--config", config]);
        var group = $"iscsi://127.0.0.1:{d.IscsiPort}/iqn.2026-11.io.ballast:db";
        var cap = await Tool.RunOkAsync(Tool.Require("iscsi-readcapacity16", "libiscsi-bin"), [group + "/1"], Limit);
        Assert.That(cap.Stdout, Does.Contain("RETURNED LOGICAL BLOCK ADDRESS:16383").And.Contain("LOGICAL BLOCK LENGTH IN BYTES:512"), "LUN 1 is db-log");
        var listed = await Tool.RunOkAsync(Tool.Require("iscsi-ls", "libiscsi-bin"), ["-s", $"iscsi://127.0.0.1:{d.IscsiPort}"], Limit);
        Assert.That(listed.Stdout, Does.Contain("iqn.2026-11.io.ballast:db").And.Contain("iqn.2026-11.io.ballast:db-log"));

        var exports = await Tool.RunOkAsync("curl", ["-s", "--unix-socket", d.ApiSocket, "http://ballastd/v1/exports"], Limit);
        using var doc = JsonDocument.Parse(exports.Stdout);
        var iscsi = doc.RootElement.GetProperty("exports").EnumerateArray()
            .Where(e => e.GetProperty("protocol").GetString() == "iscsi" && e.GetProperty("volume").GetString() == "db-log")
            .Select(e => $"{e.GetProperty("name").GetString()} {e.GetProperty("lun").GetInt32()}").ToList();
        Assert.That(iscsi, Is.EquivalentTo(new[] { "iqn.2026-11.io.ballast:db-log 0", "iqn.2026-11.io.ballast:db 1" }));
        Assert.That(d.Output, Does.Not.Contain("iSCSI group target"), "no warning when every volume exists");
        Assert.That(await d.StopAsync(), Is.Zero);
    }

    [Test]
    public async Task A_group_naming_volumes_that_do_not_exist_is_warned_about_and_its_login_says_why()
    {
        await using var d = await DaemonProcess.StartReadyAsync(DataDir, ["--volume", "real:16MiB", "--pool-size", "1GiB", "--iscsi-group", "ghosts=nosuch,nothere"]);
        Assert.That(d.Output, Does.Contain("iSCSI group target iqn.2026-11.io.ballast:ghosts: no volume nosuch, nothere in this pool (yet)"));
        var inq = await Tool.RunAsync(Tool.Require("iscsi-inq", "libiscsi-bin"), [$"iscsi://127.0.0.1:{d.IscsiPort}/iqn.2026-11.io.ballast:ghosts/0"], Limit);
        Assert.That(inq.ExitCode, Is.Not.Zero, inq.ToString());
        await d.WaitForAsync("ghosts: none of its volumes exists in this pool", TimeSpan.FromSeconds(10));
        Assert.That(await d.StopAsync(), Is.Zero);
    }

    [Test]
    public async Task A_bad_iscsi_setting_in_the_config_file_stops_the_start_naming_the_key()
    {
        var config = Path.Combine(_dir, "ballastd.json");
        await File.WriteAllTextAsync(config, """{"iscsi-iqn-prefix": "Ballast-Target"}""");
        await using var d = DaemonProcess.Start(DataDir, ["--config", config]);
        Assert.That(await d.WaitForExitAsync(TimeSpan.FromSeconds(60)), Is.EqualTo(2));
        Assert.That(d.Output, Does.Contain("invalid setting --iscsi-iqn-prefix").And.Contain("\"Ballast-Target\" is not an iSCSI name prefix"));
        Assert.That(d.Has("ready"), Is.False);
    }

    [Test]
    public async Task A_chap_user_without_a_secret_stops_the_start_naming_the_secret_key()
    {
        await using var d = DaemonProcess.Start(DataDir, ["--iscsi-chap-user", "alice"]);
        Assert.That(await d.WaitForExitAsync(TimeSpan.FromSeconds(60)), Is.EqualTo(2));
        Assert.That(d.Output, Does.Contain("invalid setting --iscsi-chap-secret").And.Contain("iscsi-chap-secret-file"));
    }

    [Test]
    public async Task A_portal_in_use_stops_the_start_before_ready_saying_which_address()
    {
        using var taken = new TcpListener(IPAddress.Loopback, 0);
        taken.Start();
        var port = ((IPEndPoint)taken.LocalEndpoint).Port;
        await using var d = DaemonProcess.Start(DataDir, ["--pool-size", "1GiB", "--iscsi-listen", $"127.0.0.1:{port}"]);
        Assert.That(await d.WaitForExitAsync(TimeSpan.FromSeconds(60)), Is.EqualTo(1));
        Assert.That(d.Output, Does.Contain($"cannot listen on 127.0.0.1:{port}").And.Contain("could not start"));
        Assert.That(d.Has("ballastd ready"), Is.False, "READY only after every portal is bound");
    }

    [Test]
    public async Task Listen_off_serves_nbd_only()
    {
        await using var d = await DaemonProcess.StartReadyAsync(DataDir, ["--volume", "v:16MiB", "--pool-size", "1GiB", "--iscsi-listen", "off"]);
        Assert.That(d.Has("iSCSI target off"), Is.True, d.Output);
        Assert.That(d.Has("iscsi-inq"), Is.False, "no iSCSI hints");
        var exports = await Tool.RunOkAsync("curl", ["-s", "--unix-socket", d.ApiSocket, "http://ballastd/v1/exports"], Limit);
        using var doc = JsonDocument.Parse(exports.Stdout);
        var protocols = doc.RootElement.GetProperty("exports").EnumerateArray().Select(e => e.GetProperty("protocol").GetString()).ToList();
        Assert.That(protocols, Is.EqualTo(new[] { "nbd" }));
        Assert.That(await d.StopAsync(), Is.Zero);
    }
}
