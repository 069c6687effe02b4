using System.Net.Sockets;
using Ballast.Nbd.Tests.Support;
using Ballast.TestSupport;
using static Ballast.TestSupport.NbdRawClient;

namespace Ballast.Nbd.Tests.Handshake;

/// <summary>Many or hostile clients: the server stays up and keeps serving the others.</summary>
[CancelAfter(120_000)]
public class AbuseTests
{
    [Test]
    public async Task A_thousand_clients_that_never_finish_the_handshake_do_not_stop_other_clients(CancellationToken ct)
    {
        await using var server = await TestServer.StartAsync(o => o with { MaxHandshakes = 64, HandshakeTimeout = TimeSpan.FromSeconds(30) });
        var (busy, _, _) = await OpenAsync(server.Endpoint, "v2", ct: ct);
        await using (busy)
        {
            var stalled = new List<Socket>();
            try
            {
                var io = 0;
                for (var i = 0; i < 1000; i++)
                {
                    var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                    await s.ConnectAsync(server.Endpoint, ct);
                    stalled.Add(s);
                    if (i % 100 == 0)
                    {
                        // The established client keeps its service throughout the flood.
                        await busy.SendRequestAsync(FlagFua, CmdWrite, (ulong)i, (ulong)i * 512, 512, new byte[512], ct);
                        Assert.That((await busy.ReadSimpleReplyAsync(0, ct)).Error, Is.Zero);
                        io++;
                    }
                }
                Assert.That(io, Is.EqualTo(10));
                // A newcomer still gets in: the oldest stalled handshakes make room for it.
                var (late, size, _) = await OpenAsync(server.Endpoint, "v1", ct: ct);
                await using (late)
                {
                    Assert.That(size, Is.EqualTo(64UL << 20));
                    await late.SendRequestAsync(0, CmdRead, 1, 0, 4096, ct: ct);
                    Assert.That((await late.ReadSimpleReplyAsync(4096, ct)).Data, Is.All.EqualTo(0x5a));
                }
                Assert.That(server.Server.Connections.Count(c => c.Export == null), Is.LessThanOrEqualTo(64), "stalled handshakes are bounded");
            }
            finally
            {
                foreach (var s in stalled)
                {
                    s.Dispose();
                }
            }
        }
    }

    [Test]
    public async Task Connections_beyond_the_limit_are_closed_at_once(CancellationToken ct)
    {
        await using var server = await TestServer.StartAsync(o => o with { MaxConnections = 4, MaxHandshakes = 4 });
        var clients = new List<NbdRawClient>();
        try
        {
            for (var i = 0; i < 4; i++)
            {
                clients.Add((await OpenAsync(server.Endpoint, "v1", ct: ct)).Client);
            }
            await using var extra = await ConnectAsync(server.Endpoint, ct);
            Assert.That(await extra.IsClosedAsync(TimeSpan.FromSeconds(5)), Is.True);
            Assert.That(server.Log.Contains("already has 4 connections"), Is.True);
            await clients[0].SendRequestAsync(0, CmdFlush, 1, 0, 0, ct: ct);
            Assert.That((await clients[0].ReadSimpleReplyAsync(0, ct)).Error, Is.Zero);
        }
        finally
        {
            foreach (var c in clients)
            {
                await c.DisposeAsync();
            }
        }
    }

    [Test]
    public async Task Random_bytes_from_many_clients_never_take_the_server_down(CancellationToken ct)
    {
        await using var server = await TestServer.StartAsync(o => o with { HandshakeTimeout = TimeSpan.FromSeconds(2) });
        var rng = new Random(1234);
        for (var round = 0; round < 200; round++)
        {
            await using var c = await HandshakeAsync(server.Endpoint, ct: ct);
            var junk = new byte[rng.Next(16, 200)];
            rng.NextBytes(junk);
            if (round % 2 == 0)
            {
                // Valid magic, random option and length fields.
                System.Buffers.Binary.BinaryPrimitives.WriteUInt64BigEndian(junk, IHaveOpt);
            }
            await c.Stream.WriteAsync(junk, ct);
        }
        var (ok, _, _) = await OpenAsync(server.Endpoint, "v1", ct: ct);
        await using (ok)
        {
            await ok.SendRequestAsync(0, CmdRead, 1, 0, 4096, ct: ct);
            Assert.That((await ok.ReadSimpleReplyAsync(4096, ct)).Error, Is.Zero);
        }
    }
}
