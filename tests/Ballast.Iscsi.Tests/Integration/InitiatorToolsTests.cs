using Ballast.Iscsi.Tests.Support;

namespace Ballast.Iscsi.Tests.Integration;

/// <summary>libiscsi's command-line tools and qemu's iSCSI block driver against the target.</summary>
[CancelAfter(180_000)]
public class InitiatorToolsTests
{
    [Test]
    public async Task Iscsi_inq_readcapacity16_and_ls_describe_the_volumes()
    {
        var inq = Tools.Require("iscsi-inq", "libiscsi-bin");
        var rc16 = Tools.Require("iscsi-readcapacity16", "libiscsi-bin");
        var ls = Tools.Require("iscsi-ls", "libiscsi-bin");
        await using var f = await TargetFixture.StartAsync();
        await f.Pool.CreateVolumeAsync("alpha", 64L << 20, 512);
        await f.Pool.CreateVolumeAsync("Beta_4k", 32L << 20, 4096);

        var i = await Tools.RunAsync(inq, [f.Url("alpha")], TimeSpan.FromSeconds(30));
        Assert.That(i.ExitCode, Is.Zero, i.ToString());
        Assert.That(i.Output, Does.Contain("Vendor:BALLAST").And.Contain("Peripheral Device Type:DIRECT_ACCESS"));

        var lbp = await Tools.RunAsync(inq, ["-e", "1", "-c", "178", f.Url("alpha")], TimeSpan.FromSeconds(30));
        Assert.That(lbp.Output, Does.Contain("lbpu:1").And.Contain("lbpws:1").And.Contain("lbprz:1").And.Contain("provisioning type:2"), lbp.ToString());
        var ids = await Tools.RunAsync(inq, ["-e", "1", "-c", "131", f.Url("alpha")], TimeSpan.FromSeconds(30));
        Assert.That(ids.Output, Does.Contain("Designator Type:(3) NAA").And.Contain($"Designator:[{TargetFixture.Iqn("alpha")},t,0x0001"), ids.ToString());

        var c = await Tools.RunAsync(rc16, [f.Url("Beta_4k")], TimeSpan.FromSeconds(30));
        Assert.That(c.ExitCode, Is.Zero, c.ToString());
        Assert.That(c.Output, Does.Contain("LOGICAL BLOCK LENGTH IN BYTES:4096").And.Contain($"RETURNED LOGICAL BLOCK ADDRESS:{(32L << 20) / 4096 - 1}")
            .And.Contain("LBPME:1").And.Contain($"Total size:{32L << 20}"));

        var l = await Tools.RunAsync(ls, ["-s", $"iscsi://127.0.0.1:{f.Port}"], TimeSpan.FromSeconds(30));
        Assert.That(l.ExitCode, Is.Zero, l.ToString());
        Assert.That(l.Output, Does.Contain($"Target:{TargetFixture.Iqn("alpha")} Portal:127.0.0.1:{f.Port},1"));
        Assert.That(l.Output, Does.Contain("Target:iqn.2026-11.io.ballast:beta-4k "), "Beta_4k maps to beta-4k");
        Assert.That(l.Output, Does.Contain("Lun:0    Type:DIRECT_ACCESS"));
    }

    [Test]
    public async Task Tools_log_in_with_chap_and_a_wrong_secret_is_refused()
    {
        var inq = Tools.Require("iscsi-inq", "libiscsi-bin");
        var ls = Tools.Require("iscsi-ls", "libiscsi-bin");
        const string Secret = "s3cret-chap-value";
        await using var f = await TargetFixture.StartAsync(x => x.Defaults(chap: new ChapSecret("initiator-user", Secret)));
        await f.Pool.CreateVolumeAsync("guarded", 16L << 20);

        var ok = await Tools.RunAsync(inq, [f.Url("guarded", user: "initiator-user", secret: Secret)], TimeSpan.FromSeconds(30));
        Assert.That(ok.ExitCode, Is.Zero, ok.ToString());
        Assert.That(ok.Output, Does.Contain("Vendor:BALLAST"));

        var none = await Tools.RunAsync(inq, [f.Url("guarded")], TimeSpan.FromSeconds(30));
        Assert.That(none.ExitCode, Is.Not.Zero, none.ToString());
        var wrong = await Tools.RunAsync(inq, [f.Url("guarded", user: "initiator-user", secret: "not-the-secret")], TimeSpan.FromSeconds(30));
        Assert.That(wrong.ExitCode, Is.Not.Zero, wrong.ToString());
        Assert.That(wrong.Output, Does.Contain("ogin failed").Or.Contain("uthentication").IgnoreCase);

        var list = await Tools.RunAsync(ls, [$"iscsi://initiator-user%{Secret}@127.0.0.1:{f.Port}"], TimeSpan.FromSeconds(30));
        Assert.That(list.Output, Does.Contain(TargetFixture.Iqn("guarded")), list.ToString());
        Assert.That(f.Logs.All, Does.Not.Contain(Secret), "secrets are never logged");
        Assert.That(f.Logs.All, Does.Contain("CHAP authentication failed"));
    }

    // 4096: qemu's driver once aborted on its first read of 32 KiB or more from a 4096-byte LU
    // (see InquiryCommand.BlockLimits).
    [TestCase(512)]
    [TestCase(4096)]
    public async Task Qemu_img_copies_random_data_to_and_from_a_volume(int blockSize)
    {
        var qemuImg = Tools.Require("qemu-img", "qemu-utils qemu-block-extra");
        const long Size = 32L << 20;
        await using var f = await TargetFixture.StartAsync();
        await f.Pool.CreateVolumeAsync("qemu", Size, blockSize);
        var src = Path.Combine(f.Directory, "src.raw");
        var back = Path.Combine(f.Directory, "back.raw");
        var data = new byte[Size];
        new Random(42).NextBytes(data);
        data.AsSpan(4 << 20, 1 << 20).Clear(); // a zero run, so qemu may skip or zero it
        await File.WriteAllBytesAsync(src, data);
        var url = f.Url("qemu");

        var to = await Tools.RunAsync(qemuImg, ["convert", "-p", "-n", "-f", "raw", "-O", "raw", src, url], TimeSpan.FromMinutes(2));
        Assert.That(to.ExitCode, Is.Zero, to.ToString());
        var cmp = await Tools.RunAsync(qemuImg, ["compare", "-f", "raw", "-F", "raw", src, url], TimeSpan.FromMinutes(2));
        Assert.That(cmp.ExitCode, Is.Zero, cmp.ToString());
        Assert.That(cmp.Output, Does.Contain("Images are identical"));

        var from = await Tools.RunAsync(qemuImg, ["convert", "-f", "raw", "-O", "raw", url, back], TimeSpan.FromMinutes(2));
        Assert.That(from.ExitCode, Is.Zero, from.ToString());
        Assert.That(await File.ReadAllBytesAsync(back), Is.EqualTo(data));

        // And what qemu wrote is what the volume holds.
        var v = f.Pool.Find("qemu")!;
        var check = new byte[1 << 20];
        await v.ReadAsync(17 << 20, check);
        Assert.That(check, Is.EqualTo(data.AsSpan(17 << 20, 1 << 20).ToArray()));

        // qemu-io, each command in a fresh process as a VM's first reads would be: a large read
        // of written data, of a zero run and of a trimmed range (qemu asks GET LBA STATUS first).
        var qemuIo = Tools.Require("qemu-io", "qemu-utils qemu-block-extra");
        foreach (var command in new[]
        {
            "write -P 0x5a 20M 1M", "read -P 0x5a 20M 1M", "read -P 0 4M 1M",
            "discard 24M 2M", "read -P 0 24M 2M", "read -P 0x5a 20M 64k",
        })
        {
            var io = await Tools.RunAsync(qemuIo, ["-f", "raw", "-t", "none", "-c", command, url], TimeSpan.FromMinutes(1));
            Assert.That(io.ExitCode, Is.Zero, $"qemu-io -c '{command}': {io}");
            Assert.That(io.Output, Does.Not.Contain("failed"), $"qemu-io -c '{command}': {io}");
        }
    }

    [Test]
    public async Task Qemu_img_at_depth_1_writes_alone_on_the_receive_loop_and_is_acknowledged_before_the_device_write()
    {
        // With one command in flight the receive loop writes it itself (WriteFlags.Alone). What
        // arrives together goes to the appender: DataPathTests checks that with bursts of its own,
        // since qemu-img's depth does not decide what reaches the target together.
        var qemuImg = Tools.Require("qemu-img", "qemu-utils qemu-block-extra");
        await using var f = await TargetFixture.StartAsync();
        await f.Pool.CreateVolumeAsync("alone", 32L << 20, 4096);
        var before = f.Pool.GetStats();
        var r = await Tools.RunAsync(qemuImg, ["bench", "-w", "-f", "raw", "-t", "none", "-d", "1", "-c", "400",
            "-s", "4096", "-S", "4096", "--pattern=90", f.Url("alone")], TimeSpan.FromMinutes(2));
        Assert.That(r.ExitCode, Is.Zero, r.ToString());
        var after = f.Pool.GetStats();
        var alone = after.InlineBatches - before.InlineBatches;
        var early = after.EarlyAcks - before.EarlyAcks;
        // Loose bound: a checkpoint or a segment change sends a few to the appender.
        Assert.That(alone, Is.GreaterThanOrEqualTo(200), $"of 400 writes at depth 1, {alone} were written on the receive loop");
        // Written alone, each was acknowledged before its device write (WCE is on).
        Assert.That(early, Is.EqualTo(alone), $"of {alone} writes written on the receive loop, {early} were acknowledged before their device write");
        var v = f.Pool.Find("alone")!;
        var back = new byte[4096];
        await v.ReadAsync(399L * 4096, back);
        Assert.That(back, Is.All.EqualTo((byte)90), "the last block qemu wrote");
    }
}
