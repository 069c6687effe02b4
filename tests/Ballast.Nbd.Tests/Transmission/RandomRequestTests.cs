using System.Buffers.Binary;
using Ballast.Nbd.Tests.Support;
using Ballast.TestSupport;
using static Ballast.TestSupport.NbdRawClient;

namespace Ballast.Nbd.Tests.Transmission;

/// <summary>
/// Past the handshake, a client sends random requests: any command number and flags, offsets
/// and lengths anywhere from zero to the end of the 64-bit range, truncated payloads, bad
/// magic. The server must answer in well-formed replies or close that connection, never hang
/// on a disconnect, never change another volume or a snapshot, and keep serving everyone else.
/// </summary>
[CancelAfter(180_000)]
public class RandomRequestTests
{
    private const int Rounds = 300;

    [Test]
    public async Task Random_requests_get_well_formed_replies_or_a_close_and_touch_nothing_else(CancellationToken ct)
    {
        await using var server = await TestServer.StartAsync();
        // The canary: data on another volume, read back after every 50 rounds.
        var canary = new byte[256 << 10];
        new Random(7).NextBytes(canary);
        var (c2, _, _) = await OpenAsync(server.Endpoint, "v2", ct: ct);
        await using (c2)
        {
            await c2.SendRequestAsync(0, CmdWrite, 1, 1 << 20, (uint)canary.Length, canary, ct);
            Assert.That((await c2.ReadSimpleReplyAsync(ct: ct)).Error, Is.Zero);
        }

        var rng = new Random(20261125);
        var replies = 0;
        var errors = 0;
        var disconnects = 0;
        for (var round = 0; round < Rounds; round++)
        {
            var structured = rng.Next(2) == 0;
            var (c, size, _) = await OpenAsync(server.Endpoint, "v1", structured, metaContext: structured && rng.Next(2) == 0, ct);
            await using (c)
            {
                // Replies are read as they come, so the server never blocks on a full socket;
                // structured replies carry their own lengths and are checked chunk by chunk.
                var drain = structured ? DrainStructuredAsync(c, ct) : DrainRawAsync(c, ct);
                var whole = true;
                var sent = 0;
                try
                {
                    for (var n = rng.Next(1, 16); sent < n && whole; sent++)
                    {
                        whole = await SendRandomRequestAsync(c, rng, size, ct);
                    }
                    if (whole)
                    {
                        // A clean disconnect: outstanding requests finish, then the server closes.
                        await c.SendRequestAsync(0, CmdDisc, 0, 0, 0, ct: ct);
                        disconnects++;
                        Assert.That((await drain.WaitAsync(TimeSpan.FromSeconds(10), ct)).WellFormed, Is.True,
                            $"round {round}: well-formed replies, then the close NBD_CMD_DISC asks for");
                    }
                }
                catch (IOException)
                {
                    // The server closed while we were still sending: allowed after a bad request.
                }
                if (!whole)
                {
                    // After bad magic or a payload above the maximum the server closes by itself;
                    // a short payload it waits for until this client goes away.
                    try
                    {
                        await drain.WaitAsync(TimeSpan.FromMilliseconds(300), ct);
                    }
                    catch (TimeoutException)
                    {
                        c.Stream.Close();
                    }
                }
                var seen = await drain.WaitAsync(TimeSpan.FromSeconds(10), ct);
                Assert.That(seen.WellFormed, Is.True, $"round {round}: replies were well formed");
                replies += seen.Replies;
                errors += seen.Errors;
            }
            if (round % 50 == 49)
            {
                await AssertCanaryAsync(server, canary, ct);
            }
        }
        TestContext.Progress.WriteLine($"{Rounds} rounds: {disconnects} clean disconnects, {replies} structured replies of which {errors} errors");
        // The requests reached both sides of the server: work done and requests refused.
        Assert.That(replies - errors, Is.GreaterThan(50));
        Assert.That(errors, Is.GreaterThan(100));

        // Nothing else changed: the snapshot and the canary are intact, the pool takes writes,
        // and no connection is left behind.
        var (snap, _, _) = await OpenAsync(server.Endpoint, "v1@snap", ct: ct);
        await using (snap)
        {
            await snap.SendRequestAsync(0, CmdRead, 1, 0, 1 << 20, ct: ct);
            var r = await snap.ReadSimpleReplyAsync(1 << 20, ct);
            Assert.That(r.Error, Is.Zero);
            Assert.That(r.Data.All(b => b == 0x5a), Is.True, "the snapshot still holds what it froze");
        }
        await AssertCanaryAsync(server, canary, ct);
        Assert.That(server.Pool.GetStats().Poisoned, Is.False);
        // Bad requests are refused or logged as warnings: an error line is an exception nobody expected.
        Assert.That(server.Log.Lines.Where(l => l.StartsWith("Error:")), Is.Empty);
        for (var i = 0; i < 100 && server.Server.Connections.Count > 0; i++)
        {
            await Task.Delay(50, ct);
        }
        Assert.That(server.Server.Connections, Is.Empty, "every connection ended");
    }

    /// <summary>Sends one random request; false when its payload was cut short (the stream is mid-request).</summary>
    private static async Task<bool> SendRandomRequestAsync(NbdRawClient c, Random rng, ulong size, CancellationToken ct)
    {
        var type = (ushort)(rng.Next(10) < 8 ? rng.Next(8) : rng.Next(8, 0x10000));
        // Mostly plausible requests, so the work paths run as well as the refusals.
        var flags = (ushort)(rng.Next(8) switch { 0 => rng.Next(0x10000), 1 or 2 => rng.Next(32), _ => 0 });
        var offset = rng.Next(8) switch
        {
            0 => (ulong)rng.NextInt64(),
            1 => ulong.MaxValue - (ulong)rng.Next(1 << 20),
            2 => size - (ulong)rng.Next(1 << 16),
            _ => (ulong)rng.NextInt64((long)size),
        };
        var length = rng.Next(8) switch
        {
            0 => 0u,
            1 => (uint)rng.NextInt64(uint.MaxValue + 1L),
            2 => (uint)rng.Next(1 << 26),
            _ => (uint)rng.Next(1 << 17),
        };
        var magic = rng.Next(30) == 0 ? (uint)rng.Next() : RequestMagic;
        if (type != CmdWrite)
        {
            await c.SendRequestAsync(flags, type, (ulong)rng.NextInt64(), offset, length, ct: ct, magic: magic);
            return magic == RequestMagic;
        }
        // A write's payload is sent whole when small, else cut short (the server must not wait
        // forever for it: it closes on a length above its maximum, or the client closes).
        var whole = length <= 256 << 10;
        var payload = new byte[whole ? length : rng.Next(1 << 16)];
        rng.NextBytes(payload);
        await c.SendRequestAsync(flags, type, (ulong)rng.NextInt64(), offset, length, payload, ct, magic);
        return whole && magic == RequestMagic;
    }

    private readonly record struct Seen(bool WellFormed, int Replies, int Errors);

    /// <summary>Reads replies until the stream ends; not well formed if one was not a valid reply.</summary>
    private static async Task<Seen> DrainStructuredAsync(NbdRawClient c, CancellationToken ct)
    {
        await Task.Yield();
        int replies = 0, errors = 0;
        try
        {
            while (true)
            {
                var r = await c.ReadReplyAsync(ct);
                if (!r.Simple && r.Type is not (0 or 1 or 2 or 5) && (r.Type & 0x8000) == 0)
                {
                    return new Seen(false, replies, errors);
                }
                replies++;
                errors += r.Error != 0 ? 1 : 0;
            }
        }
        catch (Exception e) when (e is EndOfStreamException or IOException or ObjectDisposedException)
        {
            return new Seen(true, replies, errors);
        }
        catch (AssertionException)
        {
            return new Seen(false, replies, errors);
        }
    }

    private static async Task<Seen> DrainRawAsync(NbdRawClient c, CancellationToken ct)
    {
        await Task.Yield();
        var b = new byte[64 << 10];
        try
        {
            while (await c.Stream.ReadAsync(b, ct) > 0)
            {
            }
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
        }
        return new Seen(true, 0, 0);
    }

    private static async Task AssertCanaryAsync(TestServer server, byte[] canary, CancellationToken ct)
    {
        var (c, _, _) = await OpenAsync(server.Endpoint, "v2", ct: ct);
        await using (c)
        {
            await c.SendRequestAsync(0, CmdRead, 2, 1 << 20, (uint)canary.Length, ct: ct);
            var r = await c.ReadSimpleReplyAsync(canary.Length, ct);
            Assert.That(r.Error, Is.Zero);
            Assert.That(r.Data, Is.EqualTo(canary), "the other volume's data is untouched");
        }
    }
}
