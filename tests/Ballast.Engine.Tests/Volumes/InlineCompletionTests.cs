using Ballast.Engine.Volumes;

namespace Ballast.Engine.Tests.Volumes;

/// <summary>
/// WriteFlags.CompleteInline and ReadInlineAsync let a frontend's short continuation run on the
/// engine thread that finished the I/O (no thread-pool hop); without them the continuation must
/// never run there, or a caller that goes on to block (dispose the pool, wait for another write)
/// would stall or deadlock the engine. Uses a real file so reads go through the I/O threads.
/// </summary>
public class InlineCompletionTests
{
    private string _dir = null!;
    private Pool _pool = null!;
    private IBlockVolume _volume = null!;

    [SetUp]
    public async Task SetUp()
    {
        var ioUring = TestContext.CurrentContext.Test.Arguments.FirstOrDefault() is not false;
        _dir = Path.Combine(Path.GetTempPath(), "ballast-inline-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(_dir);
        _pool = await Pool.OpenAsync(new PoolOptions
        {
            Path = Path.Combine(_dir, "pool"),
            Capacity = 64L << 20,
            SegmentSize = TestPools.SegmentSize,
            MaxBatchBytes = 256 << 10,
            BackgroundMaintenance = false,
            ReadThreads = 2,
            IoUring = ioUring,
        });
        _volume = await _pool.CreateVolumeAsync("v", 8 << 20);
    }

    [TearDown]
    public async Task TearDown()
    {
        await _pool.DisposeAsync();
        Directory.Delete(_dir, recursive: true);
    }

    [Test]
    public async Task A_write_marked_inline_continues_on_the_appender_thread_and_others_do_not()
    {
        var data = TestPools.Pattern(1, 8192);
        var inline = await ContinuationThreadsAsync(() => _volume.WriteAsync(0, data, WriteFlags.CompleteInline));
        var plain = await ContinuationThreadsAsync(() => _volume.WriteAsync(8192, data, WriteFlags.None));
        var fua = await ContinuationThreadsAsync(() => _volume.WriteAsync(16384, data, WriteFlags.CompleteInline | WriteFlags.Fua));
        Assert.Multiple(() =>
        {
            Assert.That(inline, Does.Contain("ballast-appender"));
            Assert.That(plain, Does.Not.Contain("ballast-appender").And.Not.Contain("ballast-sync"));
            // FUA completes after the sync, on the sync thread.
            Assert.That(fua, Does.Contain("ballast-sync"));
        });
        var back = new byte[8192];
        await _volume.ReadAsync(16384, back);
        Assert.That(back, Is.EqualTo(data));
    }

    [Test]
    public async Task A_flush_marked_inline_continues_on_the_sync_thread_and_a_plain_one_does_not()
    {
        var data = TestPools.Pattern(4, 4096);
        var inline = await ContinuationThreadsAsync(async () =>
        {
            await _volume.WriteAsync(0, data, WriteFlags.None);
            await _volume.FlushInlineAsync();
        });
        var plain = await ContinuationThreadsAsync(async () =>
        {
            await _volume.WriteAsync(0, data, WriteFlags.None);
            await _volume.FlushAsync();
        });
        Assert.Multiple(() =>
        {
            Assert.That(inline, Does.Contain("ballast-sync"));
            Assert.That(plain, Does.Not.Contain("ballast-sync").And.Not.Contain("ballast-appender"));
        });
    }

    [Test]
    public async Task An_inline_read_continues_on_an_io_thread_and_a_plain_read_does_not([Values] bool ioUring)
    {
        var data = TestPools.Pattern(2, 4096);
        await _volume.WriteAsync(0, data, WriteFlags.None);
        var buffer = new byte[4096];
        var inline = await ContinuationThreadsAsync(() => _volume.ReadInlineAsync(0, buffer));
        Assert.That(buffer, Is.EqualTo(data));
        Array.Clear(buffer);
        var plain = await ContinuationThreadsAsync(() => _volume.ReadAsync(0, buffer));
        Assert.Multiple(() =>
        {
            Assert.That(inline, Has.Some.Matches<string?>(n => n != null && n.StartsWith("pool-")), "an I/O thread (pool-uring, or pool-ioN without io_uring)");
            Assert.That(plain, Has.None.Matches<string?>(n => n != null && n.StartsWith("pool-")));
            Assert.That(buffer, Is.EqualTo(data));
        });
    }

    [Test]
    public async Task An_unaligned_write_marked_inline_does_its_read_modify_write_off_the_appender_thread()
    {
        var data = TestPools.Pattern(3, 5000);
        var threads = await ContinuationThreadsAsync(() => _volume.WriteAsync(100, data, WriteFlags.CompleteInline));
        Assert.That(threads, Does.Not.Contain("ballast-appender"));
        var back = new byte[5000];
        await _volume.ReadAsync(100, back);
        Assert.That(back, Is.EqualTo(data));
    }

    /// <summary>
    /// The threads the caller's continuation ran on over a number of tries (null: a pool thread).
    /// An I/O may finish before its caller awaits it, and then the caller goes on on its own
    /// thread, so a single try proves nothing either way.
    /// </summary>
    private static async Task<HashSet<string?>> ContinuationThreadsAsync(Func<ValueTask> start, int tries = 40)
    {
        var names = new HashSet<string?>();
        for (var i = 0; i < tries; i++)
        {
            // From a thread-pool thread, so that a synchronous completion shows as a pool thread.
            names.Add(await Task.Run(async () =>
            {
                await start().ConfigureAwait(false);
                return Thread.CurrentThread.Name;
            }));
        }
        return names;
    }
}
