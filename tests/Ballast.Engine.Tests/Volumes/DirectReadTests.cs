using Ballast.Engine.Buffers;
using Ballast.Engine.Tests.FaultInjection;
using Ballast.Engine.Volumes;

namespace Ballast.Engine.Tests.Volumes;

/// <summary>
/// A read into aligned memory takes whole data pieces straight from the device into it, not
/// through the scratch buffer: it must return what a read into an ordinary array returns, for
/// every mix of data, zeroes, holes and partial blocks, and still refuse a damaged block.
/// </summary>
public class DirectReadTests
{
    private const int Block = 4096;

    [Test]
    public async Task Reads_into_aligned_memory_return_what_reads_into_arrays_return([Values(0, 1, 7)] int seed)
    {
        var storage = new FaultStorage();
        await using var pool = await TestPools.OpenAsync(storage);
        var v = await pool.CreateVolumeAsync("v", 8 << 20);
        var rng = new Random(seed);
        // Data records of many sizes (some across each other), zeroes, trims and holes.
        for (var i = 0; i < 60; i++)
        {
            var at = rng.Next(0, (8 << 20) / Block - 64) * (long)Block;
            switch (rng.Next(6))
            {
                case 0:
                    await v.WriteZeroesAsync(at, rng.Next(1, 40) * Block, mayDeallocate: rng.Next(2) == 0);
                    break;
                case 1:
                    await v.TrimAsync(at, rng.Next(1, 40) * Block);
                    break;
                default:
                    await v.WriteAsync(at, TestPools.Pattern(rng.Next(), rng.Next(1, 64) * Block), WriteFlags.None);
                    break;
            }
        }
        await v.FlushAsync();
        using var aligned = new AlignedBuffer(2 << 20);
        for (var i = 0; i < 40; i++)
        {
            // Whole blocks (read straight in) and unaligned ranges (through the scratch buffer).
            var whole = i % 2 == 0;
            var at = whole ? rng.Next(0, (6 << 20) / Block) * (long)Block : rng.Next(0, 6 << 20);
            var length = whole ? rng.Next(1, 512) * Block : rng.Next(1, 2 << 20);
            var expected = new byte[length];
            await v.ReadAsync(at, expected);
            var target = aligned.Memory[..length];
            target.Span.Fill(0xCC);
            await v.ReadAsync(at, target);
            Assert.That(target.ToArray(), Is.EqualTo(expected), $"read {length} bytes at {at}");
        }
    }

    [Test]
    public async Task A_damaged_block_read_straight_into_aligned_memory_is_an_error()
    {
        var storage = new FaultStorage();
        await using var pool = await TestPools.OpenAsync(storage);
        var v = await pool.CreateVolumeAsync("v", 8 << 20);
        var data = TestPools.Pattern(5, 256 << 10);
        await v.WriteAsync(1 << 20, data, WriteFlags.None);
        await v.FlushAsync();
        var device = storage.FindBlock(data.AsSpan(10 * Block, Block));
        Assert.That(device, Is.GreaterThanOrEqualTo(0));
        storage.Corrupt(device * Block + 17, 2);
        using var aligned = new AlignedBuffer(256 << 10);
        var e = Assert.ThrowsAsync<BlockVolumeException>(async () => await v.ReadAsync(1 << 20, aligned.Memory));
        Assert.That(e!.Message, Does.Contain("checksum"));
    }
}
