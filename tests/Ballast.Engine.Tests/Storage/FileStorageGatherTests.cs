using Ballast.Engine.Buffers;
using Ballast.Engine.Interop;
using Ballast.Engine.Storage;

namespace Ballast.Engine.Tests.Storage;

/// <summary>
/// A gathered write that the kernel takes only in part: the rest must follow, part by part,
/// from the right place in the right part. A regular file never writes short on its own, so
/// the test's pwritev stops early on purpose.
/// </summary>
public class FileStorageGatherTests
{
    // Parts of 8 KiB, 64 KiB, 4 KiB and 128 KiB: 204 KiB written at 1 MiB.
    private static readonly int[] PartSizes = [8 << 10, 64 << 10, 4 << 10, 128 << 10];
    private const long At = 1 << 20;

    [TestCase(0, Description = "nothing written")]
    [TestCase(4 << 10, Description = "inside the first part")]
    [TestCase(8 << 10, Description = "exactly at a part boundary")]
    [TestCase((8 + 60) << 10, Description = "inside the second part")]
    [TestCase((8 + 64 + 4 + 4) << 10, Description = "inside the last part")]
    public unsafe void A_short_pwritev_is_finished_from_where_it_stopped(int writtenFirst)
    {
        var path = Path.Combine(TestContext.CurrentContext.WorkDirectory, "gather-" + Guid.NewGuid().ToString("N")[..8]);
        var buffers = PartSizes.Select(n => new AlignedBuffer(n)).ToArray();
        try
        {
            var rng = new Random(writtenFirst);
            foreach (var b in buffers)
            {
                rng.NextBytes(b.Span);
            }
            using (var s = FileStorage.Open(path, 4 << 20, readThreads: 1, useIoUring: false))
            {
                var calls = 0;
                s.PWriteVCall = (fd, iov, count, offset) =>
                {
                    calls++;
                    // Hand the kernel only the first writtenFirst bytes of the vector.
                    var cut = stackalloc Libc.IoVec[count];
                    long left = writtenFirst;
                    var used = 0;
                    for (var i = 0; i < count && left > 0; i++, used++)
                    {
                        cut[i] = iov[i];
                        cut[i].Length = (nuint)Math.Min(left, (long)iov[i].Length);
                        left -= (long)cut[i].Length;
                    }
                    return used == 0 ? 0 : Libc.PWriteV(fd, cut, used, offset);
                };
                s.WriteGather(At, buffers.Select(b => (ReadOnlyMemory<byte>)b.Memory).ToArray());
                Assert.That(calls, Is.EqualTo(1), "the rest goes with plain writes, not another gathered one");
                s.Sync();
            }
            var file = File.ReadAllBytes(path);
            var expected = buffers.SelectMany(b => b.Span.ToArray()).ToArray();
            Assert.That(file.AsSpan((int)At, expected.Length).SequenceEqual(expected), Is.True, "the file holds every part, in order");
            Assert.That(file.AsSpan((int)At + expected.Length, 4096).IndexOfAnyExcept((byte)0), Is.EqualTo(-1), "nothing written past the end");
        }
        finally
        {
            foreach (var b in buffers)
            {
                ((IDisposable)b).Dispose();
            }
            File.Delete(path);
        }
    }
}
