using System.Net.Sockets;
using System.Text.Json;
using Ballast.Nbd.Tests.Support;
using Ballast.TestSupport;

namespace Ballast.Nbd.Tests.Clients;

/// <summary>Listening on a Unix socket as well as TCP (--nbd-listen unix:/path).</summary>
[CancelAfter(60_000)]
public class UnixSocketTests
{
    [Test]
    public async Task Nbdinfo_and_qemu_io_work_over_a_unix_socket_and_a_stale_socket_file_is_replaced()
    {
        var path = Path.Combine(Path.GetTempPath(), $"ballast-{Guid.NewGuid():N}.sock");
        // A socket file left behind by a previous run must not stop the server from binding.
        // (.NET removes the file when its socket closes, so python leaves one behind.)
        await Tool.RunOkAsync("/usr/bin/python3", ["-c", $"import socket; socket.socket(socket.AF_UNIX).bind('{path}')"], TimeSpan.FromSeconds(30));
        Assert.That(File.Exists(path), Is.True);
        await using (var server = await TestServer.StartAsync(o => o with { Listen = [.. o.Listen, new UnixDomainSocketEndPoint(path)] }))
        {
            var r = await Tool.RunOkAsync(Tool.Require("nbdinfo", "libnbd-bin"), ["--json", $"nbd+unix:///v1?socket={path}"], TimeSpan.FromSeconds(60));
            using var doc = JsonDocument.Parse(r.Stdout);
            Assert.That(doc.RootElement.GetProperty("exports")[0].GetProperty("export-size").GetInt64(), Is.EqualTo(64L << 20));
            var io = await Tool.RunOkAsync(Tool.Require("qemu-io", "qemu-utils"), ["-f", "raw", "-c", "write -P 0x33 0 65536", "-c", "read -P 0x33 0 65536",
                $"nbd+unix:///v2?socket={path}"], TimeSpan.FromSeconds(60));
            Assert.That(io.Stdout, Does.Not.Contain("verification failed"));
            Assert.That(server.Server.Connections, Is.Empty.Or.All.Matches<NbdConnectionInfo>(c => c.Peer == "unix-client"));
        }
        Assert.That(File.Exists(path), Is.False, "the socket file is removed on stop");
    }

    [Test]
    public void A_regular_file_in_the_way_is_not_deleted_and_the_start_fails_clearly()
    {
        var path = Path.Combine(Path.GetTempPath(), $"ballast-{Guid.NewGuid():N}.sock");
        File.WriteAllText(path, "not a socket");
        try
        {
            var e = Assert.ThrowsAsync<InvalidOperationException>(async () => await TestServer.StartAsync(o => o with { Listen = [new UnixDomainSocketEndPoint(path)] }));
            Assert.That(e!.Message, Does.Contain("cannot listen on unix:" + path));
            Assert.That(File.ReadAllText(path), Is.EqualTo("not a socket"));
        }
        finally
        {
            File.Delete(path);
        }
    }
}
