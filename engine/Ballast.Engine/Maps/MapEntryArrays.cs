using System.Numerics;

namespace Ballast.Engine.Maps;

/// <summary>
/// Spare leaf arrays, by power-of-two capacity (4 to 1024 entries). Leaves live for seconds or
/// more, so the garbage they leave (a leaf outgrown, or copied while a checkpoint holds the old
/// one) dies in gen 2 and brings on gen-2 collections. Reusing arrays keeps the map's churn out of
/// the collector. An array comes back only when nothing can read it any more: the caller says so.
/// Bounded by <see cref="MaxSpareBytes"/>: past it, spares of other sizes make room, then
/// returned arrays are left to the collector.
/// </summary>
internal static class MapEntryArrays
{
    private const int MinShift = 2;
    private const int MaxShift = ExtentMap.WindowShift;
    private static readonly int EntryBytes = System.Runtime.CompilerServices.Unsafe.SizeOf<MapEntry>();

    /// <summary>
    /// Spare arrays kept at most, over all capacities (64 MiB): about what the leaves of 12 GiB of
    /// randomly written volume take, and never more than a checkpoint's copies held just before.
    /// </summary>
    public const long MaxSpareBytes = 64L << 20;

    private static readonly Stack<MapEntry[]>[] s_spare = CreateStacks();
    private static long s_spareBytes;

    public static long SpareBytes => Interlocked.Read(ref s_spareBytes);

    private static Stack<MapEntry[]>[] CreateStacks()
    {
        var stacks = new Stack<MapEntry[]>[MaxShift - MinShift + 1];
        for (var i = 0; i < stacks.Length; i++)
        {
            stacks[i] = new Stack<MapEntry[]>();
        }
        return stacks;
    }

    /// <summary>An array of at least <paramref name="capacity"/> entries (rounded up to a power of two); its contents are stale.</summary>
    public static MapEntry[] Rent(int capacity)
    {
        var shift = Math.Max(MinShift, BitOperations.Log2(BitOperations.RoundUpToPowerOf2((uint)Math.Max(1, capacity))));
        if (shift > MaxShift)
        {
            return new MapEntry[capacity];
        }
        var stack = s_spare[shift - MinShift];
        lock (stack)
        {
            if (stack.TryPop(out var a))
            {
                Interlocked.Add(ref s_spareBytes, -(long)a.Length * EntryBytes);
                return a;
            }
        }
        return new MapEntry[1 << shift];
    }

    /// <summary>Takes back an array nothing reads any more. Arrays not of a pooled size are left to the collector.</summary>
    public static void Return(MapEntry[] array)
    {
        var length = array.Length;
        if (length < 1 << MinShift || length > 1 << MaxShift || !BitOperations.IsPow2(length))
        {
            return;
        }
        var bytes = (long)length * EntryBytes;
        var cls = BitOperations.Log2((uint)length) - MinShift;
        if (Interlocked.Add(ref s_spareBytes, bytes) > MaxSpareBytes && !EvictOtherThan(cls))
        {
            Interlocked.Add(ref s_spareBytes, -bytes);
            return;
        }
        var stack = s_spare[cls];
        lock (stack)
        {
            stack.Push(array);
        }
    }

    /// <summary>
    /// Makes room by dropping spares of other sizes, smallest first: leaves grow through the small
    /// sizes once and then stay large, so what piles up there is what is needed least.
    /// </summary>
    private static bool EvictOtherThan(int keep)
    {
        for (var c = 0; c < s_spare.Length && Interlocked.Read(ref s_spareBytes) > MaxSpareBytes; c++)
        {
            if (c == keep)
            {
                continue;
            }
            var stack = s_spare[c];
            lock (stack)
            {
                while (Interlocked.Read(ref s_spareBytes) > MaxSpareBytes && stack.TryPop(out var a))
                {
                    Interlocked.Add(ref s_spareBytes, -(long)a.Length * EntryBytes);
                }
            }
        }
        return Interlocked.Read(ref s_spareBytes) <= MaxSpareBytes;
    }
}
