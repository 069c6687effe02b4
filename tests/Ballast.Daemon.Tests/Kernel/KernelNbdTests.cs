using System.Text.RegularExpressions;
using Ballast.Daemon.Tests.Process;
using Ballast.TestSupport;

namespace Ballast.Daemon.Tests.Kernel;

/// <summary>
/// The Linux kernel's NBD client (in a qemu VM, tests/vm) against ballastd: ext4 made, written,
/// detached, re-attached and checked; then, after ballastd restarted and defragmented the
/// volume, checked again by the kernel and by e2fsck through qemu's NBD client.
/// </summary>
[CancelAfter(600_000)]
public partial class KernelNbdTests
{
    private static readonly TimeSpan VmLimit = TimeSpan.FromSeconds(300);

    private static async Task<Tool.Result> RunVmAsync(string mode, int port, params string[] extra)
    {
        Tool.Require("qemu-system-x86_64", "qemu-system-x86");
        var args = new List<string>
        {
            RepoPaths.Vm("guests/ballast-nbd-ext4.sh"), "--timeout", "240",
            "--env", $"MODE={mode}", "--env", $"NBD_PORT={port}", "--env", "NBD_EXPORT=kern",
        };
        args.AddRange(extra);
        var r = await Tool.RunAsync(RepoPaths.Vm("run-vm.sh"), args, VmLimit);
        TestContext.Out.WriteLine(r.Stdout);
        return r;
    }

    [Test]
    public async Task Ext4_on_dev_nbd0_survives_detach_and_a_daemon_restart()
    {
        var dir = Path.Combine(Path.GetTempPath(), "ballastd-kernel-" + Guid.NewGuid().ToString("N")[..10]);
        try
        {
            var port = DaemonProcess.FreePort();
            string sums;
            await using (var d = await DaemonProcess.StartReadyAsync(dir, ["--volume", "kern:256MiB", "--pool-size", "2GiB"], port))
            {
                var first = await RunVmAsync("roundtrip", port);
                Assert.That(first.ExitCode, Is.Zero, $"guest failed:\n{first}\nballastd:\n{d.Output}");
                Assert.That(first.Stdout, Does.Contain("== NBD OK"));
                Assert.That(first.Stdout, Does.Contain("clean").Or.Contain("files"), "e2fsck ran");
                sums = string.Join('\n', SumLine().Matches(first.Stdout).Select(m => m.Groups[1].Value)) + "\n";
                Assert.That(sums.Split('\n', StringSplitOptions.RemoveEmptyEntries), Has.Length.EqualTo(7), first.Stdout);
                Assert.That(d.Has("connected to export kern"), Is.True);
                Assert.That(await d.StopAsync(), Is.Zero, d.Output);
            }
            await using (var d = await DaemonProcess.StartReadyAsync(dir, [], port))
            {
                // Every block of the file system read and written back unchanged in random order
                // (scattered on the device, as a random-write workload leaves it), then rewritten in
                // volume order by defragmenting: the kernel and e2fsck read what that left.
                await ScatterAsync(d.Endpoint, "kern", 256 << 20);
                var defrag = await Tool.RunOkAsync("dotnet", [Path.Combine(AppContext.BaseDirectory, "ballastctl.dll"), "--socket", d.ApiSocket, "volume", "defragment", "kern", "--json"],
                    TimeSpan.FromSeconds(120));
                TestContext.Out.WriteLine(defrag.Stdout);
                Assert.That(defrag.Stdout, Does.Contain("\"stopped\": null").And.Contain("\"windowsMoved\": 64"), "every 4 MiB window was scattered, and moved");
                var sumsFile = Path.Combine(dir, "sums");
                await File.WriteAllTextAsync(sumsFile, sums);
                var second = await RunVmAsync("verify", port, "--add", $"{sumsFile}:/root/sums");
                Assert.That(second.ExitCode, Is.Zero, $"guest failed:\n{second}\nballastd:\n{d.Output}");
                Assert.That(second.Stdout, Does.Contain(": OK"));

                // The host checks the same file system through qemu's NBD client.
                var image = Path.Combine(dir, "copy.img");
                await Tool.RunOkAsync(Tool.Require("qemu-img", "qemu-utils"), ["convert", "-f", "raw", "-O", "raw", $"nbd://127.0.0.1:{port}/kern", image], TimeSpan.FromSeconds(120));
                var fsck = await Tool.RunAsync(Tool.Require("e2fsck", "e2fsprogs"), ["-fn", image], TimeSpan.FromSeconds(120));
                Assert.That(fsck.ExitCode, Is.Zero, fsck.ToString());
                Assert.That(await d.StopAsync(), Is.Zero);
            }
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>Reads each 4 KiB block of the export and writes it back as it was, in random order, over one NBD connection.</summary>
    private static async Task ScatterAsync(System.Net.IPEndPoint endpoint, string export, int bytes)
    {
        var (c, _, _) = await NbdRawClient.OpenAsync(endpoint, export);
        await using (c)
        {
            var blocks = Enumerable.Range(0, bytes / 4096).ToArray();
            new Random(5).Shuffle(blocks);
            foreach (var b in blocks)
            {
                await c.SendRequestAsync(0, NbdRawClient.CmdRead, (ulong)b, (ulong)b * 4096, 4096);
                var (error, _, data) = await c.ReadSimpleReplyAsync(4096);
                Assert.That(error, Is.Zero);
                await c.SendRequestAsync(0, NbdRawClient.CmdWrite, (ulong)b, (ulong)b * 4096, 4096, data);
                Assert.That((await c.ReadSimpleReplyAsync()).Error, Is.Zero);
            }
            await c.SendRequestAsync(0, NbdRawClient.CmdFlush, 0, 0, 0);
            Assert.That((await c.ReadSimpleReplyAsync()).Error, Is.Zero);
        }
    }

    [GeneratedRegex(@"^SUM (\S+\s+\S+)\s*$", RegexOptions.Multiline)]
    private static partial Regex SumLine();
}
