using System.Buffers.Binary;
using Ballast.TestSupport;
using static Ballast.TestSupport.NbdRawClient;

namespace Ballast.Daemon.Tests.Process;

/// <summary>
/// ballastd killed with SIGKILL at random moments under a pipelined write load over NBD. After
/// each restart, every write acknowledged before the last completed FLUSH reads back exactly,
/// and no block holds bytes that were never written to it.
/// </summary>
public class CrashUnderLoadTests
{
    private const int Blocks = 1024;
    private const int BlockSize = 4096;
    private const int InFlight = 16;
    private const int FlushEvery = 8;

    /// <summary>What each block may hold: the durable version and every version sent after it.</summary>
    private sealed class BlockModel
    {
        public long Durable = -1;
        public readonly List<long> SentAfter = [];
    }

    private static byte[] Content(int block, long version)
    {
        var b = new byte[BlockSize];
        var rng = new Random(HashCode.Combine(block, version));
        rng.NextBytes(b);
        BinaryPrimitives.WriteInt64LittleEndian(b, 0x42414c4c41535421); // "BALLAST!"
        BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(8), block);
        BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(12), version);
        return b;
    }

    /// <summary>The version a block holds (-1 for never written), or null for bytes nobody wrote.</summary>
    private static long? Decode(int block, ReadOnlySpan<byte> data)
    {
        if (!data.ContainsAnyExcept((byte)0))
        {
            return -1;
        }
        if (BinaryPrimitives.ReadInt64LittleEndian(data) != 0x42414c4c41535421 || BinaryPrimitives.ReadInt32LittleEndian(data[8..]) != block)
        {
            return null;
        }
        var version = BinaryPrimitives.ReadInt64LittleEndian(data[12..]);
        return data.SequenceEqual(Content(block, version)) ? version : null;
    }

    [Test]
    [CancelAfter(900_000)]
    public async Task Acknowledged_flushed_writes_survive_sigkill_at_random_moments(CancellationToken ct)
    {
        var rounds = Environment.GetEnvironmentVariable("BALLAST_CRASH_ROUNDS") is { } r ? int.Parse(r, System.Globalization.CultureInfo.InvariantCulture) : 50;
        var dir = Path.Combine(Path.GetTempPath(), "ballastd-crash-" + Guid.NewGuid().ToString("N")[..10]);
        var model = Enumerable.Range(0, Blocks).Select(_ => new BlockModel()).ToArray();
        var rng = new Random(20261123);
        long nextVersion = 1;
        long totalAcked = 0, totalFlushes = 0, lostUnflushed = 0;
        try
        {
            for (var round = 0; round < rounds; round++)
            {
                await using var d = await DaemonProcess.StartReadyAsync(dir, ["--volume", "crash:16MiB", "--pool-size", "256MiB"]);
                var (c, _, _) = await OpenAsync(d.Endpoint, "crash", ct: ct);
                await using (c)
                {
                    // Verify what the previous round left, then take it as the new durable state.
                    for (var b = 0; b < Blocks; b += 64)
                    {
                        await c.SendRequestAsync(0, CmdRead, (ulong)b, (ulong)b * BlockSize, 64 * BlockSize, ct: ct);
                        var reply = await c.ReadSimpleReplyAsync(64 * BlockSize, ct);
                        Assert.That(reply.Error, Is.Zero);
                        for (var k = 0; k < 64; k++)
                        {
                            var m = model[b + k];
                            var v = Decode(b + k, reply.Data.AsSpan(k * BlockSize, BlockSize));
                            Assert.That(v, Is.Not.Null, $"round {round}: block {b + k} holds bytes never written to it");
                            var allowed = m.SentAfter.Append(m.Durable).ToHashSet();
                            Assert.That(allowed, Does.Contain(v!.Value), $"round {round}: block {b + k} holds version {v}, durable {m.Durable}, sent after it [{string.Join(',', m.SentAfter)}]");
                            if (v != m.Durable && m.SentAfter.Count > 0 && v < m.SentAfter.Max())
                            {
                                lostUnflushed++;
                            }
                            m.Durable = v.Value;
                            m.SentAfter.Clear();
                        }
                    }

                    // Load: pipelined writes, a FLUSH after every few acknowledgements, until the kill.
                    var killAfter = TimeSpan.FromMilliseconds(rng.Next(100, 1500));
                    var killer = Task.Run(async () =>
                    {
                        await Task.Delay(killAfter, ct);
                        await d.KillAsync();
                    }, ct);
                    var busy = new Dictionary<ulong, (int Block, long Version)>();
                    var acked = new List<(int Block, long Version)>();
                    (ulong Cookie, List<(int, long)> Covers)? flush = null;
                    ulong cookie = 1;
                    var sinceFlush = 0;
                    try
                    {
                        while (!killer.IsCompleted)
                        {
                            while (busy.Count < InFlight)
                            {
                                int block;
                                do
                                {
                                    block = rng.Next(Blocks);
                                }
                                while (busy.Values.Any(x => x.Block == block));
                                var version = nextVersion++;
                                model[block].SentAfter.Add(version);
                                busy[cookie] = (block, version);
                                await c.SendRequestAsync(0, CmdWrite, cookie++, (ulong)block * BlockSize, BlockSize, Content(block, version), ct);
                            }
                            var rep = await c.ReadSimpleReplyAsync(0, ct);
                            Assert.That(rep.Error, Is.Zero, $"round {round}: request {rep.Cookie} failed");
                            if (flush is { } f && rep.Cookie == f.Cookie)
                            {
                                // Everything acknowledged before the FLUSH was sent is now durable.
                                foreach (var (blk, ver) in f.Covers)
                                {
                                    var m = model[blk];
                                    if (ver > m.Durable)
                                    {
                                        m.Durable = ver;
                                        m.SentAfter.RemoveAll(x => x <= ver);
                                    }
                                }
                                totalFlushes++;
                                flush = null;
                                continue;
                            }
                            acked.Add(busy[rep.Cookie]);
                            busy.Remove(rep.Cookie);
                            totalAcked++;
                            if (++sinceFlush >= FlushEvery && flush == null)
                            {
                                flush = (cookie, [.. acked]);
                                acked.Clear();
                                sinceFlush = 0;
                                await c.SendRequestAsync(0, CmdFlush, cookie++, 0, 0, ct: ct);
                            }
                        }
                    }
                    catch (Exception e) when (e is IOException or EndOfStreamException or System.Net.Sockets.SocketException)
                    {
                        // The daemon died under us: expected.
                    }
                    await killer;
                }
            }
            TestContext.Out.WriteLine($"{rounds} kills: {totalAcked} writes acknowledged, {totalFlushes} flushes completed, {lostUnflushed} blocks lost unflushed writes (allowed)");
            Assert.That(totalFlushes, Is.GreaterThan(rounds), "the load included flushes");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
