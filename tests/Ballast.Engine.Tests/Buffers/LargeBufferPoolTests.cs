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
}
