using System.Buffers;
using System.Net;
using System.Net.Sockets;
using System.Threading.Channels;
using Ballast.Engine.Async;
using Ballast.Engine.Replication.Transport;
using Ballast.Engine.Replication.Wire;

namespace Ballast.Engine.Tests.Replication;

public class FrameConnectionTests
{
    private static byte[] Frame(int id, byte[] payload)
    {
        var h = new FrameHeader { Type = FrameType.Write, Length = payload.Length, Volume = (uint)id, Id = (ulong)id };
        var bytes = new byte[FrameHeader.Size + payload.Length];
        h.Write(bytes, payload);
        payload.CopyTo(bytes, FrameHeader.Size);
        return bytes;
    }

    private static async Task<(Socket Client, FrameConnection Server, Channel<(FrameHeader, byte[])> Received)> ConnectAsync(CancellationToken ct)
    {
        var received = Channel.CreateUnbounded<(FrameHeader, byte[])>();
        var (client, conn) = await ConnectAsync((_, h, payload) =>
        {
            received.Writer.TryWrite((h, payload.AsSpan(0, h.Length).ToArray()));
            ArrayPool<byte>.Shared.Return(payload);
            return ValueTask.CompletedTask;
        }, ct);
        return (client, conn, received);
    }

    private static async Task<(Socket Client, FrameConnection Server)> ConnectAsync(Func<FrameConnection, FrameHeader, byte[], ValueTask> onFrame, CancellationToken ct)
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(listener.LocalEndpoint, ct);
        var conn = new FrameConnection(await listener.AcceptSocketAsync(ct));
        conn.Start((h, payload) => onFrame(conn, h, payload));
        return (client, conn);
    }

    /// <summary>Reads one whole frame from a plain socket; its id.</summary>
    private static async Task<ulong> ReadFrameIdAsync(Socket s, CancellationToken ct)
    {
        await using var stream = new NetworkStream(s, ownsSocket: false);
        var header = new byte[FrameHeader.Size];
        await stream.ReadExactlyAsync(header, ct);
        Assert.That(FrameHeader.TryRead(header, out var h, out var problem), Is.True, problem);
        await stream.ReadExactlyAsync(new byte[h.Length], ct);
        return h.Id;
    }

    [Test]
    [CancelAfter(30_000)]
    public async Task A_frame_queued_inside_a_batch_leaves_when_the_batch_ends(CancellationToken ct)
    {
        var (client, conn, _) = await ConnectAsync(ct);
        using var _c = client;
        await using var _d = conn;
        // A thread of its own: the batch is per thread and must not span an await.
        var (sent, availableInBatch) = (false, -1);
        var sentInBatch = new Thread(() =>
        {
            using (CompletionBatch.Begin())
            {
                sent = conn.Send(new OutFrame { Type = FrameType.Ping, Id = 7 });
                // Long enough for a drain scheduled on the thread pool to have written it.
                Thread.Sleep(300);
                availableInBatch = client.Available;
            }
        });
        sentInBatch.Start();
        sentInBatch.Join();
        Assert.That((sent, availableInBatch), Is.EqualTo((true, 0)), "nothing leaves before the batch ends");
        Assert.That(await ReadFrameIdAsync(client, ct), Is.EqualTo(7UL));
        // Outside a batch a frame leaves on its own.
        Assert.That(conn.Send(new OutFrame { Type = FrameType.Ping, Id = 8 }), Is.True);
        Assert.That(await ReadFrameIdAsync(client, ct), Is.EqualTo(8UL));
    }

    [Test]
    [CancelAfter(30_000)]
    public async Task Frames_received_together_are_handled_in_one_batch_that_ends_before_the_loop_waits(CancellationToken ct)
    {
        // Frame 1's handler answers (deferred to the loop's batch) and then waits for the client
        // to have that answer: it arrives only if the loop ends its batch before awaiting the handler.
        var openFor = new List<(ulong, bool)>();
        var answered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var (client, conn) = await ConnectAsync(async (c, h, payload) =>
        {
            ArrayPool<byte>.Shared.Return(payload);
            lock (openFor)
            {
                openFor.Add((h.Id, CompletionBatch.IsOpen));
            }
            c.Send(new OutFrame { Type = FrameType.Ping | FrameType.ResponseBit, Id = h.Id });
            if (h.Id == 1)
            {
                await answered.Task;
            }
        }, ct);
        using var _c = client;
        await using var _d = conn;
        await client.SendAsync(Frame(1, [1]).Concat(Frame(2, [2])).Concat(Frame(3, [3])).ToArray(), ct);
        Assert.That(await ReadFrameIdAsync(client, ct), Is.EqualTo(1UL));
        answered.SetResult();
        Assert.That(await ReadFrameIdAsync(client, ct), Is.EqualTo(2UL));
        Assert.That(await ReadFrameIdAsync(client, ct), Is.EqualTo(3UL));
        lock (openFor)
        {
            Assert.That(openFor, Is.EqualTo(new[] { (1UL, true), (2UL, true), (3UL, true) }), "each handler ran inside the loop's batch");
        }
    }

    [Test]
    [CancelAfter(30_000)]
    public async Task Frames_arrive_whole_however_the_stream_splits_them(CancellationToken ct)
    {
        var (client, conn, received) = await ConnectAsync(ct);
        using var _ = client;
        await using var __ = conn;
        var rng = new Random(5);
        // Empty, tiny, a header's worth, blocks, larger than the receive buffer, the largest allowed.
        int[] sizes = [0, 4, 31, 32, 4096, 16385, 300_000, FrameHeader.MaxPayload, 4096, 0, 8192, 12];
        var payloads = sizes.Select(n => { var b = new byte[n]; rng.NextBytes(b); return b; }).ToArray();
        var stream = payloads.SelectMany((p, i) => Frame(i, p)).ToArray();
        int[] chunks = [1, 7, 33, 4097, 65536, 300_000, 2];
        for (int at = 0, k = 0; at < stream.Length; k++)
        {
            var n = Math.Min(chunks[k % chunks.Length], stream.Length - at);
            await client.SendAsync(stream.AsMemory(at, n), ct);
            at += n;
        }
        for (var i = 0; i < sizes.Length; i++)
        {
            var (h, body) = await received.Reader.ReadAsync(ct);
            Assert.That((h.Id, h.Volume, h.Type, h.Length), Is.EqualTo(((ulong)i, (uint)i, FrameType.Write, sizes[i])));
            Assert.That(body, Is.EqualTo(payloads[i]), $"frame {i}");
        }
        Assert.That(conn.CloseReason, Is.Null);
    }

    [Test]
    [CancelAfter(30_000)]
    public async Task A_frame_that_fails_its_CRC_closes_the_connection_after_the_good_ones(CancellationToken ct)
    {
        var (client, conn, received) = await ConnectAsync(ct);
        using var _ = client;
        await using var __ = conn;
        var good = Frame(1, new byte[4096]);
        var bad = Frame(2, new byte[4096]);
        bad[FrameHeader.Size + 100] ^= 1;
        await client.SendAsync(good.Concat(bad).Concat(Frame(3, new byte[8])).ToArray(), ct);
        var (h, _) = await received.Reader.ReadAsync(ct);
        Assert.That(h.Id, Is.EqualTo(1UL));
        await Task.Delay(Timeout.Infinite, conn.Closed).ContinueWith(_ => { }, TaskScheduler.Default);
        Assert.That(conn.CloseReason, Does.Contain("CRC"));
        Assert.That(received.Reader.TryRead(out var _), Is.False, "nothing after the damaged frame is delivered");
    }
}
