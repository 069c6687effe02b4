using System.Runtime.InteropServices;

namespace Ballast.Engine.Cleaning;

/// <summary>
/// Two-phase epoch so the cleaner can tell when no reader still holds a physical address it
/// resolved before the maps were redirected. A reader enters the current epoch around its map
/// lookup and device read; the cleaner flips the epoch and waits for the old one to empty
/// before a segment may be reused.
/// </summary>
internal sealed class ReaderEpoch
{
    private int _current;
    private Counters _counts;

    [StructLayout(LayoutKind.Explicit, Size = 256)]
    private struct Counters
    {
        [FieldOffset(64)] public int Even;
        [FieldOffset(192)] public int Odd;
    }

    private ref int Count(int epoch) => ref epoch == 0 ? ref _counts.Even : ref _counts.Odd;

    public int Enter()
    {
        while (true)
        {
            var e = Volatile.Read(ref _current);
            Interlocked.Increment(ref Count(e));
            if (Volatile.Read(ref _current) == e)
            {
                return e;
            }
            Interlocked.Decrement(ref Count(e));
        }
    }

    public void Exit(int epoch) => Interlocked.Decrement(ref Count(epoch));

    /// <summary>Flips the epoch and waits until every reader that entered before the flip has left.</summary>
    public async Task DrainAsync(CancellationToken ct)
    {
        var old = Volatile.Read(ref _current);
        Interlocked.Exchange(ref _current, 1 - old);
        while (Volatile.Read(ref Count(old)) != 0)
        {
            await Task.Delay(1, ct).ConfigureAwait(false);
        }
    }
}
