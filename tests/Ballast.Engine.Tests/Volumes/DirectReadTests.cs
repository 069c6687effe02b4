using Ballast.Engine.Buffers;
using Ballast.Engine.Interop;
using Ballast.Engine.Storage;
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

/// <summary>
/// A read that resolves to many map pieces (a volume written at random, read in order) keeps 16
/// piece reads in flight instead of one, finishes the pieces in order whatever order their reads
/// complete in, reports the first piece that fails as the error, and returns only when every
/// read it started has finished: the scratch buffer they fill goes back to the pool then.
/// </summary>
public class ScatteredReadTests
{
    private const int Block = 4096;
    private const int Pieces = 48;
    private const int InFlight = 16;

    private static async Task<(FaultStorage Storage, Pool Pool, IBlockVolume Volume, byte[] Expected)> ScatteredAsync()
    {
        var storage = new FaultStorage();
        var pool = await TestPools.OpenAsync(storage);
        var v = await pool.CreateVolumeAsync("v", 8 << 20);
        var expected = new byte[Pieces * Block];
        // Logical blocks written last to first, each on its own: adjacent in the volume, not on
        // the device, so every block is a piece of its own.
        for (var i = Pieces - 1; i >= 0; i--)
        {
            var data = TestPools.Pattern(100 + i, Block);
            data.CopyTo(expected, i * Block);
            await v.WriteAsync((long)i * Block, data, WriteFlags.None);
            await v.FlushAsync();
        }
        return (storage, pool, v, expected);
    }

    private static async Task WaitForAsync(Func<bool> condition, string what)
    {
        var until = DateTime.UtcNow.AddSeconds(10);
        while (!condition())
        {
            Assert.That(DateTime.UtcNow, Is.LessThan(until), what);
            await Task.Delay(5);
        }
    }

    /// <summary>Holds every gated read until the test releases it; counts those in flight.</summary>
    private sealed class Held
    {
        private readonly List<TaskCompletionSource> _reads = [];
        private int _inFlight;

        public int MaxInFlight { get; private set; }
        public int Finished { get; private set; }

        public int Count
        {
            get
            {
                lock (_reads)
                {
                    return _reads.Count;
                }
            }
        }

        public TaskCompletionSource this[int i]
        {
            get
            {
                lock (_reads)
                {
                    return _reads[i];
                }
            }
        }

        public async Task Gate(Func<int, Task>? after = null)
        {
            var t = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            int n;
            lock (_reads)
            {
                _reads.Add(t);
                n = _reads.Count;
                MaxInFlight = Math.Max(MaxInFlight, ++_inFlight);
            }
            try
            {
                await t.Task;
                if (after != null)
                {
                    await after(n);
                }
            }
            finally
            {
                lock (_reads)
                {
                    _inFlight--;
                    Finished++;
                }
            }
        }
    }

    [Test]
    public async Task Sixteen_pieces_are_read_at_once_and_the_bytes_land_in_place_whatever_order_they_finish([Values] bool aligned)
    {
        var (storage, pool, v, expected) = await ScatteredAsync();
        await using var _ = pool;
        var held = new Held();
        storage.ReadGate = (_, _) => held.Gate();
        using var buffer = new AlignedBuffer(expected.Length + Block);
        // Unaligned: a partial first and last block, through the scratch buffer.
        var (at, length) = aligned ? (0L, expected.Length) : (100L, expected.Length - 200);
        var target = aligned ? buffer.Memory[..length] : new byte[length];
        var read = v.ReadAsync(at, target).AsTask();
        await WaitForAsync(() => held.Count == InFlight, "16 pieces' reads start before any finishes");
        await Task.Delay(50);
        Assert.That(held.Count, Is.EqualTo(InFlight), "and no more");
        // The newest first: the oldest piece's read is what lets the next ones start.
        var released = 0;
        var until = DateTime.UtcNow.AddSeconds(20);
        while (!read.IsCompleted && DateTime.UtcNow < until)
        {
            var count = held.Count;
            for (var i = count - 1; i >= released; i--)
            {
                held[i].SetResult();
            }
            released = count;
            await Task.Delay(10);
        }
        await read;
        Assert.That(held.Count, Is.EqualTo(Pieces));
        Assert.That(held.MaxInFlight, Is.EqualTo(InFlight));
        Assert.That(target.ToArray(), Is.EqualTo(expected.AsSpan((int)at, length).ToArray()));
    }

    [Test]
    public async Task A_failed_piece_fails_the_read_only_after_the_other_started_pieces_finished()
    {
        var (storage, pool, v, _) = await ScatteredAsync();
        await using var _ = pool;
        var held = new Held();
        storage.ReadGate = (_, _) => held.Gate(n => n == 3 ? throw new StorageException("read", Libc.EIO, 0) : Task.CompletedTask);
        var read = v.ReadAsync(0, new byte[Pieces * Block]).AsTask();
        await WaitForAsync(() => held.Count == InFlight, "the first pieces' reads start");
        // All but the last started piece finish, the failed third among them.
        for (var i = 0; i < InFlight - 1; i++)
        {
            held[i].SetResult();
        }
        await WaitForAsync(() => held.Finished == InFlight - 1, "the released reads finish");
        await Task.Delay(100);
        Assert.That(held.Count, Is.EqualTo(InFlight + 2), "the first two pieces each let one more start, the failed third none");
        Assert.That(read.IsCompleted, Is.False, "the read waits for the pieces still in flight");
        for (var i = InFlight - 1; i < InFlight + 2; i++)
        {
            held[i].SetResult();
        }
        var e = Assert.ThrowsAsync<BlockVolumeException>(async () => await read);
        Assert.That(e!.Error, Is.EqualTo(BlockError.Io));
        Assert.That(e.Message, Does.Contain("reading offset 8192 failed"));
        Assert.That(held.Finished, Is.EqualTo(InFlight + 2));

        // The pool is fine afterwards: the same range reads back once the device is.
        storage.ReadGate = null;
        var again = new byte[Pieces * Block];
        await v.ReadAsync(0, again);
        Assert.That(again.AsSpan(0, Block).ToArray(), Is.EqualTo(TestPools.Pattern(100, Block)));
    }

    [Test]
    public async Task The_first_piece_that_fails_is_the_error_a_damaged_one_as_well_as_an_unreadable_one()
    {
        var (storage, pool, v, _) = await ScatteredAsync();
        await using var _ = pool;
        var damaged = storage.FindBlock(TestPools.Pattern(101, Block));
        var unreadable = storage.FindBlock(TestPools.Pattern(105, Block));
        Assert.That(damaged, Is.GreaterThanOrEqualTo(0));
        Assert.That(unreadable, Is.GreaterThanOrEqualTo(0));
        storage.Corrupt(damaged * Block + 9, 1);
        storage.UnreadableBlocks.Add(unreadable);

        var e = Assert.ThrowsAsync<BlockVolumeException>(async () => await v.ReadAsync(0, new byte[Pieces * Block]));
        Assert.That(e!.Message, Does.Contain("the block at offset 4096 failed its checksum"));
        var later = Assert.ThrowsAsync<BlockVolumeException>(async () => await v.ReadAsync(2 * Block, new byte[(Pieces - 2) * Block]));
        Assert.That(later!.Message, Does.Contain("reading offset 20480 failed"));
    }
}
