using Ballast.Engine.Buffers;

namespace Ballast.Engine.Tests.Buffers;

/// <summary>Large payload buffers: power-of-two sizes, aligned, reused once returned; oversized ones are not kept.</summary>
public class LargeBufferPoolTests
{
    [TestCase(1, 64 << 10)]
    [TestCase(64 << 10, 64 << 10)]
    [TestCase((64 << 10) + 1, 128 << 10)]
    [TestCase(1 << 20, 1 << 20)]
    [TestCase((1 << 20) + 4096, 2 << 20)]
    [TestCase(32 << 20, 32 << 20)]
    public void A_buffer_is_the_smallest_size_that_holds_the_request_and_comes_back_next_time(int length, int size)
    {
        using var pool = new LargeBufferPool();
        var b = pool.Rent(length);
        Assert.That(b.Length, Is.EqualTo(size));
        using (var pin = b.Memory.Pin())
        {
            unsafe
            {
                Assert.That((long)pin.Pointer % AlignedBuffer.Alignment, Is.Zero);
            }
        }
        pool.Return(b);
        Assert.That(pool.Rent(length), Is.SameAs(b), "a returned buffer is reused");
    }

    [Test]
    public void A_request_above_the_largest_size_gets_a_buffer_of_its_own_that_is_not_kept()
    {
        using var pool = new LargeBufferPool();
        var b = pool.Rent((32 << 20) + 1);
        Assert.That(b.Length, Is.EqualTo((32 << 20) + 4096), "rounded up to whole blocks");
        pool.Return(b);
        var again = pool.Rent((32 << 20) + 1);
        Assert.That(again, Is.Not.SameAs(b));
        pool.Return(again);
    }

    [Test]
    public void Idle_buffers_of_one_size_are_kept_up_to_64_MiB()
    {
        using var pool = new LargeBufferPool();
        var rented = Enumerable.Range(0, 80).Select(_ => pool.Rent(1 << 20)).ToList();
        foreach (var b in rented)
        {
            pool.Return(b);
        }
        var again = Enumerable.Range(0, 80).Select(_ => pool.Rent(1 << 20)).ToList();
        Assert.That(again.Count(rented.Contains), Is.EqualTo(64));
        foreach (var b in again)
        {
            pool.Return(b);
        }
    }

    [Test]
    public void A_trim_frees_only_the_buffers_no_rent_needed_since_the_previous_trim()
    {
        using var pool = new LargeBufferPool();
        var burst = Enumerable.Range(0, 16).Select(_ => pool.Rent(1 << 20)).ToList();
        foreach (var b in burst)
        {
            pool.Return(b);
        }
        Assert.That(pool.IdleBytes, Is.EqualTo(16L << 20));
        Assert.That(pool.Trim(), Is.Zero, "the burst used every buffer in this interval");

        // A steady load of 4 at a time keeps 4; the 12 the burst left idle go.
        for (var round = 0; round < 3; round++)
        {
            var steady = Enumerable.Range(0, 4).Select(_ => pool.Rent(1 << 20)).ToList();
            foreach (var b in steady)
            {
                pool.Return(b);
            }
        }
        Assert.That(pool.Trim(), Is.EqualTo(12L << 20));
        Assert.That(pool.IdleBytes, Is.EqualTo(4L << 20));

        // With no load at all the rest go after one more interval; the pool still works after.
        Assert.That(pool.Trim(), Is.EqualTo(4L << 20));
        Assert.That(pool.IdleBytes, Is.Zero);
        var again = pool.Rent(1 << 20);
        again.Span.Fill(0x5a);
        pool.Return(again);
        Assert.That(pool.IdleBytes, Is.EqualTo(1L << 20));
    }

    [Test]
    public void A_rent_that_found_the_pool_empty_keeps_the_next_trim_from_freeing_what_came_back()
    {
        using var pool = new LargeBufferPool();
        var a = pool.Rent(256 << 10);
        var b = pool.Rent(256 << 10);
        pool.Return(a);
        pool.Return(b);
        Assert.That(pool.Trim(), Is.Zero);
        Assert.That(pool.IdleBytes, Is.EqualTo(512L << 10));
    }

    [Test]
    public void A_pool_with_a_trim_interval_trims_on_its_own()
    {
        using var pool = new LargeBufferPool(TimeSpan.FromMilliseconds(50));
        var b = pool.Rent(128 << 10);
        pool.Return(b);
        // Two ticks: the first sets the low-water mark, the second frees the idle buffer.
        var deadline = Environment.TickCount64 + 5000;
        while (pool.IdleBytes != 0 && Environment.TickCount64 < deadline)
        {
            Thread.Sleep(20);
        }
        Assert.That(pool.IdleBytes, Is.Zero, "an idle buffer is freed within two trim intervals");
    }
}
