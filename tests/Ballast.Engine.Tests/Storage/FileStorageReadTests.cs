using Ballast.Engine.Buffers;
using Ballast.Engine.Storage;

namespace Ballast.Engine.Tests.Storage;

/// <summary>
/// Pool-file reads through io_uring and through the read threads give the same bytes, also when
/// more reads are in flight than the ring holds (the rest go to the threads) and past the end
/// of the file (zeroes, as a sparse pool file reads).
/// </summary>
public class FileStorageReadTests
{
    private const int Block = 4096;
    private const int Blocks = 1024;
    private string _path = null!;

    [SetUp]
    public void SetUp()
    {
        _path = Path.Combine(Path.GetTempPath(), "ballast-reads-" + Guid.NewGuid().ToString("N")[..8]);
        using var s = FileStorage.Open(_path, (long)Blocks * Block, readThreads: 2, useIoUring: false);
        using var buf = new AlignedBuffer(Blocks * Block);
        for (var i = 0; i < Blocks; i++)
        {
            Stamp(buf.Span.Slice(i * Block, Block), i);
        }
        s.Write(0, buf.Span);
    }

    [TearDown]
    public void TearDown() => File.Delete(_path);

    private static void Stamp(Span<byte> block, int n)
    {
        for (var k = 0; k < block.Length; k += 4)
        {
            BitConverter.TryWriteBytes(block[k..], n * 7919 + k);
        }
    }

    [Test]
    public void The_log_says_which_read_path_is_used([Values] bool ioUring)
    {
        using var s = FileStorage.Open(_path, 0, readThreads: 2, useIoUring: ioUring);
        Assert.That(s.ReadPath, ioUring ? Does.StartWith("io_uring") : Does.Contain("io_uring off"));
    }

    [Test]
    public async Task Many_concurrent_reads_return_their_own_blocks([Values] bool ioUring, [Values(false, true)] bool inline)
    {
        using var s = FileStorage.Open(_path, 0, readThreads: 2, useIoUring: ioUring);
        const int reads = 600; // more than the ring's 255 in flight
        var buffers = Enumerable.Range(0, reads).Select(_ => new AlignedBuffer(2 * Block)).ToArray();
        try
        {
            var rng = new Random(5);
            var at = Enumerable.Range(0, reads).Select(_ => rng.Next(Blocks - 1)).ToArray();
            var pending = new Task[reads];
            for (var i = 0; i < reads; i++)
            {
                pending[i] = s.ReadAsync((long)at[i] * Block, buffers[i].Memory, inline).AsTask();
            }
            await Task.WhenAll(pending);
            // With inline completions this continuation may be on the I/O thread: leave it
            // before checking and disposing (inline callers promise short continuations).
            await Task.Yield();
            var expect = new byte[Block];
            for (var i = 0; i < reads; i++)
            {
                for (var b = 0; b < 2; b++)
                {
                    Stamp(expect, at[i] + b);
                    Assert.That(buffers[i].Span.Slice(b * Block, Block).SequenceEqual(expect), $"read {i} block {b} (file block {at[i] + b})");
                }
            }
        }
        finally
        {
            foreach (var b in buffers)
            {
                ((IDisposable)b).Dispose();
            }
        }
    }

    [Test]
    public void An_inline_read_asked_for_inside_a_batch_reaches_the_kernel_when_the_batch_ends()
    {
        using var s = FileStorage.Open(_path, 0, readThreads: 2, useIoUring: true);
        Assert.That(s.ReadPath, Does.StartWith("io_uring"));
        using var deferred = new AlignedBuffer(Block);
        using var plain = new AlignedBuffer(Block);
        var expect = new byte[Block];
        // Synchronous, polling for completion: an await could go on on the completion thread
        // (inline reads finish there), and blocking that thread would stop every read.
        static bool Done(ValueTask read)
        {
            var clock = System.Diagnostics.Stopwatch.StartNew();
            while (!read.IsCompleted && clock.Elapsed < TimeSpan.FromSeconds(10))
            {
                Thread.Sleep(5);
            }
            return read.IsCompleted;
        }

        var opened = Ballast.Engine.Async.CompletionBatch.TryOpen();
        Assert.That(opened, Is.True);
        var read = s.ReadAsync(3L * Block, deferred.Memory, completeInline: true);
        // The batch is still open on this thread: the read sits in the ring, unseen by the kernel.
        Thread.Sleep(300);
        var doneInsideBatch = read.IsCompleted;
        Ballast.Engine.Async.CompletionBatch.End(ref opened);
        Assert.That(doneInsideBatch, Is.False, "the read was handed to the kernel before its batch ended");
        Assert.That(Done(read), Is.True, "the read did not complete after its batch ended");
        read.GetAwaiter().GetResult();
        Stamp(expect, 3);
        Assert.That(deferred.Span.SequenceEqual(expect), "deferred read");

        // A caller that did not promise a short continuation is never deferred: it may block on the read.
        opened = Ballast.Engine.Async.CompletionBatch.TryOpen();
        var plainRead = s.ReadAsync(5L * Block, plain.Memory, completeInline: false);
        var plainDoneInsideBatch = Done(plainRead);
        Ballast.Engine.Async.CompletionBatch.End(ref opened);
        Assert.That(plainDoneInsideBatch, Is.True, "a plain read waited for the batch");
        plainRead.GetAwaiter().GetResult();
        Stamp(expect, 5);
        Assert.That(plain.Span.SequenceEqual(expect), "plain read");
    }

    [Test]
    public async Task A_read_past_the_end_of_the_file_reads_zeroes_after_the_data([Values] bool ioUring)
    {
        using var s = FileStorage.Open(_path, 0, readThreads: 2, useIoUring: ioUring);
        using var buf = new AlignedBuffer(4 * Block);
        buf.Span.Fill(0xAA);
        await s.ReadAsync((long)(Blocks - 2) * Block, buf.Memory);
        var expect = new byte[Block];
        Stamp(expect, Blocks - 2);
        Assert.Multiple(() =>
        {
            Assert.That(buf.Span[..Block].SequenceEqual(expect));
            Assert.That(buf.Span[(2 * Block)..].ToArray(), Is.All.EqualTo(0));
        });
    }
}
