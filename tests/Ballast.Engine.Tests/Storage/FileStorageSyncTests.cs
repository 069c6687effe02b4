using Ballast.Engine.Interop;
using Ballast.Engine.Storage;

namespace Ballast.Engine.Tests.Storage;

/// <summary>
/// Linux reports a lost writeback to one fdatasync per open file: once a sync of the pool file
/// fails, every later one must fail too, or a caller would take a later success as durability
/// of pages that were lost.
/// </summary>
public class FileStorageSyncTests
{
    [Test]
    public void A_failed_fdatasync_fails_every_later_sync_without_asking_the_kernel_again()
    {
        var path = Path.Combine(TestContext.CurrentContext.WorkDirectory, "sync-" + Guid.NewGuid().ToString("N")[..8]);
        try
        {
            using var s = FileStorage.Open(path, 1 << 20, readThreads: 1, useIoUring: false);
            s.Sync();
            var calls = 0;
            var real = s.SyncCall;
            s.SyncCall = fd => ++calls == 1 ? Libc.EIO : real(fd);

            var first = Assert.Throws<StorageException>(() => s.Sync());
            Assert.That(first!.Message, Does.Contain("fdatasync"));
            var later = Assert.Throws<StorageException>(() => s.Sync(), "a sync after a failed one succeeded");
            Assert.That(later!.Message, Does.Contain("an earlier one failed"));
            Assert.That(calls, Is.EqualTo(1), "the kernel's next fdatasync would report success for the lost pages");
        }
        finally
        {
            File.Delete(path);
        }
    }
}
