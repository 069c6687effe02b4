using System.Buffers.Binary;
using Ballast.Iscsi.Tests.Support;

namespace Ballast.Iscsi.Tests.Integration;

/// <summary>
/// The Linux kernel initiator (iscsi_tcp, logged in by iscsistart) in a throw-away qemu VM
/// (tests/vm): mkfs.ext4, write, drop the disk and rescan, e2fsck -fn, verify, against volumes
/// served in-process; with CHAP, mutual CHAP with CRC32C digests, and a wrong secret.
/// </summary>
[NonParallelizable]
[CancelAfter(900_000)]
public class KernelInitiatorTests
{
    private const string User = "vm-initiator";
    private const string Secret = "vm-initiator-secret";
    private const string TargetUser = "ballast-target";
    private const string TargetSecret = "ballast-target-secret";
    private TargetFixture _f = null!;

    [OneTimeSetUp]
    public async Task Start()
    {
        Tools.Require("qemu-system-x86_64", "qemu-system-x86");
        Tools.Require("cpio", "cpio");
        _f = await TargetFixture.StartAsync(x => x.Defaults(
            mutual: new ChapSecret(TargetUser, TargetSecret),
            targetChap: new Dictionary<string, ChapSecret> { ["guarded"] = new(User, Secret), ["mutual"] = new(User, Secret) }));
        await _f.Pool.CreateVolumeAsync("plain", 256L << 20, 512);
        await _f.Pool.CreateVolumeAsync("guarded", 128L << 20, 4096);
        await _f.Pool.CreateVolumeAsync("mutual", 128L << 20, 512);
    }

    [OneTimeTearDown]
    public async Task Stop() => await _f.DisposeAsync();

    private async Task<Tools.Result> RunGuestAsync(string volume, params string[] env)
    {
        var root = Tools.RepoRoot();
        var args = new List<string> { Path.Combine(root, "tests/vm/examples/iscsi-ext4.sh"), "--timeout", "300" };
        foreach (var e in (string[])[$"ISCSI_PORT={_f.Port}", $"ISCSI_TARGET={TargetFixture.Iqn(volume)}", "ISCSI_LUN=0", "ISCSI_TPGT=1", .. env])
        {
            args.Add("--env");
            args.Add(e);
        }
        var r = await Tools.RunAsync(Path.Combine(root, "tests/vm/run-vm.sh"), args, TimeSpan.FromMinutes(8), root);
        TestContext.Out.WriteLine(r.Output);
        return r;
    }

    private async Task AssertExt4Async(string volume)
    {
        // The ext4 superblock starts at byte 1024; its magic 0xEF53 is at offset 56 (little endian).
        var v = _f.Pool.Find(volume)!;
        var sb = new byte[1024];
        await v.ReadAsync(1024, sb);
        Assert.That(BinaryPrimitives.ReadUInt16LittleEndian(sb.AsSpan(56)), Is.EqualTo(0xEF53), "ext4 superblock magic, read through the volume");
        Assert.That(System.Text.Encoding.ASCII.GetString(sb, 120, 7), Is.EqualTo("ballast"), "volume label written by the guest");
    }

    [Test, Order(1)]
    public async Task Kernel_initiator_makes_and_checks_ext4_on_a_volume()
    {
        var r = await RunGuestAsync("plain", "ISCSI_FILES=6");
        Assert.That(r.ExitCode, Is.Zero, "guest failed; see output");
        Assert.That(r.Output, Does.Contain("== iSCSI OK"));
        await AssertExt4Async("plain");
        Assert.That(_f.Logs.All, Does.Contain("iSCSI login: iqn.2026-11.io.ballast:vm"));
    }

    [Test, Order(2)]
    public async Task Kernel_initiator_logs_in_with_chap_on_a_4k_volume()
    {
        var r = await RunGuestAsync("guarded", "ISCSI_FILES=3", $"ISCSI_USER={User}", $"ISCSI_PASS={Secret}");
        Assert.That(r.ExitCode, Is.Zero);
        Assert.That(r.Output, Does.Contain("== iSCSI OK"));
        await AssertExt4Async("guarded");
    }

    [Test, Order(3)]
    public async Task Kernel_initiator_uses_mutual_chap_and_crc32c_digests()
    {
        var r = await RunGuestAsync("mutual", "ISCSI_FILES=3", $"ISCSI_USER={User}", $"ISCSI_PASS={Secret}",
            $"ISCSI_USER_IN={TargetUser}", $"ISCSI_PASS_IN={TargetSecret}", "ISCSI_HEADER_DIGEST=CRC32C", "ISCSI_DATA_DIGEST=CRC32C", "ISCSI_EXPECT_DIGESTS=1");
        Assert.That(r.ExitCode, Is.Zero);
        Assert.That(r.Output, Does.Contain("header_digest=1 data_digest=1"));
        Assert.That(r.Output, Does.Contain("== iSCSI OK"));
        await AssertExt4Async("mutual");
        Assert.That(_f.Logs.All, Does.Contain("digests header CRC32C data CRC32C, CHAP"));
    }

    [Test, Order(4)]
    public async Task Kernel_initiator_with_a_wrong_chap_secret_fails_authentication()
    {
        var r = await RunGuestAsync("guarded", $"ISCSI_USER={User}", "ISCSI_PASS=definitely-wrong", "ISCSI_EXPECT_LOGIN_FAIL=1", "ISCSI_LOGIN_TIMEOUT=30");
        Assert.That(r.ExitCode, Is.Zero, "the guest expects an authentication failure");
        Assert.That(r.Output, Does.Contain("login refused as expected"));
        Assert.That(_f.Logs.All, Does.Contain("AuthenticationFailure"));
        Assert.That(_f.Logs.All, Does.Not.Contain(Secret).And.Not.Contain(TargetSecret).And.Not.Contain("definitely-wrong"));
    }
}
