using Ballast.Engine.Async;
using Ballast.Engine.Buffers;
using Ballast.Engine.Log;
using Ballast.Engine.Storage;
using Ballast.Engine.Tests.FaultInjection;
using Ballast.Engine.Volumes;

namespace Ballast.Engine.Tests.Log;

/// <summary>
/// A large client payload in an aligned buffer goes to the device from that buffer (a gather
/// write), not copied into the batch: the bytes on the device are the same as with the copy,
/// the caller's buffer is free once its write completes, and a lone write that is acknowledged
/// before its device write never borrows (its caller could reuse the buffer first).
/// </summary>
public class BorrowedPayloadTests
{
    private const int Block = PoolLayout.BlockSize;

    private static AlignedBuffer Filled(int length, int seed)
    {
        var b = new AlignedBuffer(length);
        new Random(seed).NextBytes(b.Span);
        return b;
    }

    private static RecordDescriptor Data(long lba, int blocks) => new() { Kind = RecordKind.Data, Lba = lba, BlockCount = blocks, Lsn = lba + 1, VolumeId = 1 };

    [Test]
    public void A_batch_with_borrowed_payloads_is_the_same_bytes_as_one_built_by_copying()
    {
        using var big = Filled(256 << 10, 1);
        using var other = Filled(192 << 10, 2);
        var small = TestPools.Pattern(3, 8 << 10);
        // Payloads in order: copied (small), borrowed, copied (small), borrowed (an aligned slice),
        // copied (a large slice at an unaligned start), borrowed twice in a row, copied (small).
        ReadOnlyMemory<byte>[] payloads =
        [
            small.AsMemory(0, Block),
            big.Memory[..(128 << 10)],
            small,
            other.Memory.Slice(Block, 64 << 10),
            other.Memory.Slice(512, 64 << 10),
            big.Memory.Slice(128 << 10, 64 << 10),
            big.Memory.Slice(192 << 10, 64 << 10),
            small.AsMemory(Block, Block),
        ];
        bool[] borrowable = [false, true, false, true, false, true, true, false];

        using var copying = new BatchBuilder(1 << 20);
        using var borrowing = new BatchBuilder(1 << 20);
        long lba = 0;
        for (var i = 0; i < payloads.Length; i++)
        {
            var blocks = payloads[i].Length / Block;
            var crcs = new uint[blocks];
            Assert.That(borrowing.CanBorrow(payloads[i]), Is.EqualTo(borrowable[i]), $"payload {i}");
            var a = Data(lba, blocks);
            var b = Data(lba, blocks);
            var first = copying.Add(ref a, crcs, default, payloads[i].Span);
            var firstBorrowed = borrowable[i] ? borrowing.AddBorrowed(ref b, crcs, payloads[i]) : borrowing.Add(ref b, crcs, default, payloads[i].Span);
            Assert.That(firstBorrowed, Is.EqualTo(first));
            lba += blocks;
        }
        Assert.That(copying.CanBorrow(small.AsMemory()), Is.False, "a managed array is never borrowed");

        var expected = copying.Finish(7, Block, 3, out var headerBytes).ToArray();
        borrowing.Finish(7, Block, 3, out var headerBorrowed);
        Assert.That(headerBorrowed, Is.EqualTo(headerBytes));
        Assert.That(borrowing.HasBorrowed, Is.True);
        Assert.That(borrowing.BorrowedBytes, Is.EqualTo((128 + 64 + 64 + 64) << 10));
        var joined = new List<byte>();
        var parts = borrowing.Parts().ToArray();
        foreach (var part in parts)
        {
            Assert.That(part.Length % Block, Is.Zero, "every part is whole blocks (O_DIRECT)");
            joined.AddRange(part.ToArray());
        }
        Assert.That(joined.ToArray(), Is.EqualTo(expected), "the parts written back to back are the copied batch");
        // header+small, big, small, other, unaligned+..., (big, big adjacent but separate), small.
        Assert.That(parts, Has.Length.EqualTo(8));
    }

    [Test]
    public async Task Large_aligned_writes_reach_the_file_from_the_callers_buffer_and_read_back_after_reopening()
    {
        var dir = Path.Combine(Path.GetTempPath(), "ballast-borrow-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        try
        {
            var options = new PoolOptions { Path = Path.Combine(dir, "pool.dat"), Capacity = 128L << 20, SegmentSize = 4 << 20 };
            var expected = new byte[16 << 20];
            long borrowed;
            await using (var pool = await Pool.OpenAsync(options))
            {
                var v = await pool.CreateVolumeAsync("v", expected.Length);
                var before = pool.GetStats().BorrowedBytes;
                var writes = new List<Task>();
                var buffers = new List<AlignedBuffer>();
                for (var i = 0; i < 12; i++)
                {
                    // 1 MiB aligned writes, with 4 KiB writes from managed arrays in between, in flight together.
                    var buf = Filled(1 << 20, 100 + i);
                    buffers.Add(buf);
                    var at = (long)i * (1 << 20) + (i % 3) * Block;
                    buf.Span.CopyTo(expected.AsSpan((int)at));
                    writes.Add(v.WriteAsync(at, buf.Memory, WriteFlags.None).AsTask());
                    var small = TestPools.Pattern(200 + i, Block);
                    var smallAt = (14L << 20) + i * 2 * Block;
                    small.CopyTo(expected.AsSpan((int)smallAt));
                    writes.Add(v.WriteAsync(smallAt, small, WriteFlags.None).AsTask());
                }
                await Task.WhenAll(writes);
                await v.FlushAsync();
                borrowed = pool.GetStats().BorrowedBytes - before;
                foreach (var b in buffers)
                {
                    // The writes are complete: the buffers are the caller's again.
                    b.Span.Fill(0xEE);
                    ((IDisposable)b).Dispose();
                }
                var back = new byte[expected.Length];
                await v.ReadAsync(0, back);
                Assert.That(back, Is.EqualTo(expected), "read back while open");
            }
            // Where a segment's end splits a write, a piece under 64 KiB is copied (at most two per segment crossed).
            Assert.That(borrowed, Is.InRange((12L << 20) - 8 * (64 << 10), 12L << 20), "the 1 MiB payloads were written from their own buffers");
            await using (var pool = await Pool.OpenAsync(options))
            {
                var v = pool.OpenVolume("v");
                var back = new byte[expected.Length];
                await v.ReadAsync(0, back);
                Assert.That(back, Is.EqualTo(expected), "read back after reopening");
            }
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Test]
    public async Task A_lone_write_acknowledged_before_its_device_write_is_copied_so_its_buffer_is_free_at_once()
    {
        var storage = new FaultStorage();
        await using var pool = await Pool.OpenAsync(TestPools.Options(storage, ackBeforeDeviceWrite: true));
        var v = await pool.CreateVolumeAsync("v", 8 << 20);
        await v.FlushAsync();
        Assert.That(SpinWait.SpinUntil(() => pool.Appender.IsIdle, 5000), Is.True);
        // The largest write the submitting thread writes itself (PoolOptions.InlineWriteMaxBytes),
        // large and aligned enough to be borrowed if it were not acknowledged early.
        using var buf = Filled(64 << 10, 9);
        var original = buf.Span.ToArray();
        var stats = pool.GetStats();
        var writes = 0;
        storage.BeforeWrite = _ => Interlocked.Increment(ref writes);
        await Task.Factory.StartNew(() =>
        {
            using (CompletionBatch.Begin())
            {
                var write = v.WriteAsync(0, buf.Memory, WriteFlags.Alone | WriteFlags.CompleteInline);
                Assert.That(write.IsCompleted, Is.True, "acknowledged on the submitting thread");
                write.GetAwaiter().GetResult();
                Assert.That(Volatile.Read(ref writes), Is.Zero, "acknowledged before its device write");
                // The client reuses its buffer at once; the device write comes when the batch ends.
                buf.Span.Fill(0x5A);
            }
        }, TaskCreationOptions.LongRunning);
        var after = pool.GetStats();
        Assert.That(after.EarlyAcks - stats.EarlyAcks, Is.EqualTo(1));
        Assert.That(after.BorrowedBytes, Is.EqualTo(stats.BorrowedBytes), "an early-acknowledged payload is copied, not borrowed");
        Assert.That(Volatile.Read(ref writes), Is.GreaterThan(0), "the device write followed the batch");
        var back = new byte[original.Length];
        await v.ReadAsync(0, back);
        Assert.That(back, Is.EqualTo(original), "the device has the bytes of the write, not the reused buffer");
    }
}
