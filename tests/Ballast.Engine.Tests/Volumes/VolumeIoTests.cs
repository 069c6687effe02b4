using Ballast.Engine.Tests.FaultInjection;
using Ballast.Engine.Volumes;

namespace Ballast.Engine.Tests.Volumes;

public class VolumeIoTests
{
    private FaultStorage _storage = null!;
    private Pool _pool = null!;

    [SetUp]
    public async Task SetUp()
    {
        _storage = new FaultStorage();
        _pool = await TestPools.OpenAsync(_storage);
    }

    [TearDown]
    public async Task TearDown() => await _pool.DisposeAsync();

    private static async Task<byte[]> ReadAsync(IBlockVolume v, long offset, int length)
    {
        var b = new byte[length];
        await v.ReadAsync(offset, b);
        return b;
    }

    [Test]
    public async Task A_new_volume_reads_as_zeroes_and_is_all_hole()
    {
        var v = await _pool.CreateVolumeAsync("v", 8 << 20);
        Assert.That(await ReadAsync(v, 12345, 100_000), Is.All.EqualTo(0));
        var ranges = new AllocationRange[8];
        Assert.That(v.GetAllocation(0, 8 << 20, ranges), Is.EqualTo(1));
        Assert.That(ranges[0], Is.EqualTo(new AllocationRange(0, 8 << 20, AllocationState.Hole)));
    }

    [Test]
    public async Task Usage_counts_data_runs_and_zeroes_across_map_windows_and_walk_chunks()
    {
        var v = await _pool.CreateVolumeAsync("v", 2L << 30);
        Assert.That(_pool.GetUsage("v"), Is.EqualTo(new VolumeUsage(0, 0, 0)));
        // One write across a map window (4 MiB) and one across the walk's 64 MiB chunks: a run each.
        await v.WriteAsync((4 << 20) - (32 << 10), TestPools.Pattern(1, 64 << 10), WriteFlags.None);
        await v.WriteAsync((64L << 20) - 4096, TestPools.Pattern(2, 8192), WriteFlags.None);
        // Ten blocks written last to first: adjacent in the volume, not on the device.
        for (var i = 9; i >= 0; i--)
        {
            await v.WriteAsync((96L << 20) + i * 4096L, TestPools.Pattern(3 + i, 4096), WriteFlags.None);
        }
        await v.WriteZeroesAsync(128L << 20, 1 << 20, mayDeallocate: false);
        // A trim inside the first write splits its run and frees its block.
        await v.TrimAsync((4 << 20) + 8192, 4096);
        Assert.That(_pool.GetUsage("v"), Is.EqualTo(new VolumeUsage((64 << 10) - 4096 + 8192 + 10 * 4096, 2 + 1 + 10, 1 << 20)));
        Assert.Throws<VolumeNotFoundException>(() => _pool.GetUsage("nosuch"));
    }

    [Test]
    public async Task Aligned_writes_read_back()
    {
        var v = await _pool.CreateVolumeAsync("v", 8 << 20);
        var data = TestPools.Pattern(1, 64 << 10);
        await v.WriteAsync(4096 * 7, data, WriteFlags.None);
        Assert.That(await ReadAsync(v, 4096 * 7, data.Length), Is.EqualTo(data));
        Assert.That(await ReadAsync(v, 4096 * 7 + 100, 5000), Is.EqualTo(data.AsSpan(100, 5000).ToArray()));
    }

    [Test]
    public async Task Unaligned_writes_merge_with_the_surrounding_bytes([Values(1, 511, 4095, 4097, 9000)] int offset, [Values(1, 512, 3000, 10000)] int length)
    {
        var v = await _pool.CreateVolumeAsync("v", 1 << 20, logicalBlockSize: 512);
        var before = TestPools.Pattern(2, 1 << 16);
        await v.WriteAsync(0, before, WriteFlags.None);
        var patch = TestPools.Pattern(3, length);
        await v.WriteAsync(offset, patch, WriteFlags.None);
        var expect = (byte[])before.Clone();
        patch.CopyTo(expect, offset);
        Assert.That(await ReadAsync(v, 0, 1 << 16), Is.EqualTo(expect));
    }

    [Test]
    public async Task Large_writes_are_split_into_records_and_read_back()
    {
        var v = await _pool.CreateVolumeAsync("v", 16 << 20);
        var data = TestPools.Pattern(4, 5 << 20);
        await v.WriteAsync(1 << 20, data, WriteFlags.Fua);
        Assert.That(await ReadAsync(v, 1 << 20, data.Length), Is.EqualTo(data));
    }

    [Test]
    public async Task Trim_and_write_zeroes_store_no_data_and_read_as_zeroes()
    {
        var v = await _pool.CreateVolumeAsync("v", 8 << 20);
        await v.WriteAsync(0, TestPools.Pattern(5, 1 << 20), WriteFlags.None);
        var clientBlocks = _pool.GetStats().ClientBytesWritten;
        await v.TrimAsync(4096, 8192);
        await v.WriteZeroesAsync(65536, 65536, mayDeallocate: false);
        Assert.That(_pool.GetStats().ClientBytesWritten, Is.EqualTo(clientBlocks), "whole blocks were cleared without writing data");
        await v.WriteZeroesAsync(200_000, 100_000, mayDeallocate: true);
        Assert.That(_pool.GetStats().ClientBytesWritten, Is.EqualTo(clientBlocks + 2 * 4096), "only the two partial edge blocks were rewritten");
        Assert.That(await ReadAsync(v, 4096, 8192), Is.All.EqualTo(0));
        Assert.That(await ReadAsync(v, 65536, 65536), Is.All.EqualTo(0));
        Assert.That(await ReadAsync(v, 200_000, 100_000), Is.All.EqualTo(0));
        var ranges = new AllocationRange[16];
        var n = v.GetAllocation(0, 1 << 20, ranges);
        Assert.That(ranges.Take(n).Take(5), Is.EqualTo(new[]
        {
            new AllocationRange(0, 4096, AllocationState.Data),
            new AllocationRange(4096, 8192, AllocationState.Hole),
            new AllocationRange(12288, 65536 - 12288, AllocationState.Data),
            new AllocationRange(65536, 65536, AllocationState.Zero),
            new AllocationRange(131072, 200704 - 131072, AllocationState.Data), // block 48 holds the partial zeroes of 200000..
        }));
    }

    [Test]
    public async Task Partial_block_trim_zeroes_exactly_the_requested_bytes()
    {
        var v = await _pool.CreateVolumeAsync("v", 1 << 20, 512);
        var data = TestPools.Pattern(6, 16384);
        await v.WriteAsync(0, data, WriteFlags.None);
        await v.TrimAsync(1000, 7000);
        Array.Clear(data, 1000, 7000);
        Assert.That(await ReadAsync(v, 0, 16384), Is.EqualTo(data));
    }

    [Test]
    public async Task Requests_outside_the_volume_fail_with_the_right_error()
    {
        var v = await _pool.CreateVolumeAsync("v", 1 << 20);
        var e = Assert.ThrowsAsync<BlockVolumeException>(async () => await v.ReadAsync((1 << 20) - 10, new byte[20]));
        Assert.That(e!.Error, Is.EqualTo(BlockError.OutOfRange));
        e = Assert.ThrowsAsync<BlockVolumeException>(async () => await v.TrimAsync(long.MaxValue - 5, 100));
        Assert.That(e!.Error, Is.EqualTo(BlockError.Overflow));
        e = Assert.ThrowsAsync<BlockVolumeException>(async () => await v.WriteAsync(-4096, new byte[4096], WriteFlags.None));
        Assert.That(e!.Error, Is.EqualTo(BlockError.InvalidArgument));
    }

    [Test]
    public async Task Concurrent_sub_block_and_whole_block_writes_lose_nothing()
    {
        var v = await _pool.CreateVolumeAsync("v", 1 << 20, 512);
        // Each task owns distinct sectors of the same 4 KiB blocks; whatever the interleaving, all must land.
        var tasks = new List<Task>();
        for (var t = 0; t < 8; t++)
        {
            var sector = t;
            tasks.Add(Task.Run(async () =>
            {
                for (var block = 0; block < 32; block++)
                {
                    await v.WriteAsync(block * 4096 + sector * 512, Enumerable.Repeat((byte)(sector + 1), 512).ToArray(), WriteFlags.None);
                }
            }));
        }
        tasks.Add(Task.Run(async () =>
        {
            for (var block = 32; block < 64; block++)
            {
                await v.WriteAsync(block * 4096, Enumerable.Repeat((byte)99, 4096).ToArray(), WriteFlags.None);
            }
        }));
        await Task.WhenAll(tasks);
        var all = await ReadAsync(v, 0, 64 * 4096);
        for (var block = 0; block < 32; block++)
        {
            for (var s = 0; s < 8; s++)
            {
                Assert.That(all.AsSpan(block * 4096 + s * 512, 512).ToArray(), Is.All.EqualTo((byte)(s + 1)), $"block {block} sector {s}");
            }
        }
        Assert.That(all.AsSpan(32 * 4096).ToArray(), Is.All.EqualTo((byte)99));
    }

    [Test]
    public async Task Volumes_are_independent()
    {
        var a = await _pool.CreateVolumeAsync("a", 1 << 20);
        var b = await _pool.CreateVolumeAsync("b", 1 << 20);
        await a.WriteAsync(0, TestPools.Pattern(7, 4096), WriteFlags.None);
        Assert.That(await ReadAsync(b, 0, 4096), Is.All.EqualTo(0));
        Assert.ThrowsAsync<VolumeExistsException>(() => _pool.CreateVolumeAsync("a", 1 << 20));
        Assert.Throws<ArgumentException>(() => _pool.CreateVolumeAsync("bad name", 1 << 20).GetAwaiter().GetResult());
        Assert.Throws<ArgumentOutOfRangeException>(() => _pool.CreateVolumeAsync("odd", 1000).GetAwaiter().GetResult());
    }

    [Test]
    public async Task Everything_survives_a_clean_restart()
    {
        var v = await _pool.CreateVolumeAsync("v", 8 << 20);
        var data = TestPools.Pattern(8, 3 << 20);
        await v.WriteAsync(0, data, WriteFlags.None);
        await v.TrimAsync(1 << 20, 4096);
        Array.Clear(data, 1 << 20, 4096);
        await _pool.DisposeAsync();
        _pool = await TestPools.OpenAsync(_storage.CleanImage());
        Assert.That(_pool.Recovery.CleanShutdown, Is.True);
        Assert.That(_pool.Recovery.ReplayedBatches, Is.Zero, "a clean shutdown leaves nothing to replay");
        Assert.That(await ReadAsync(_pool.OpenVolume("v"), 0, data.Length), Is.EqualTo(data));
    }
}
