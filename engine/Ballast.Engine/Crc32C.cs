using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Ballast.Engine;

/// <summary>CRC32C (Castagnoli) on the CPU's crc32 instruction via <see cref="BitOperations.Crc32C(uint, ulong)"/>.</summary>
public static class Crc32C
{
    /// <summary>CRC32C of <paramref name="data"/> (standard: initial ~0, final inversion).</summary>
    public static uint Compute(ReadOnlySpan<byte> data) => ~Update(~0u, data);

    /// <summary>The CRC32C of a concatenation: continues <paramref name="crc"/> (a finished CRC) over <paramref name="data"/>.</summary>
    public static uint Append(uint crc, ReadOnlySpan<byte> data) => ~Update(~crc, data);

    /// <summary>Continues a raw (non-inverted) running CRC. Start with ~0u and invert the result.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static uint Update(uint crc, ReadOnlySpan<byte> data)
    {
        var words = MemoryMarshal.Cast<byte, ulong>(data);
        foreach (var w in words)
        {
            crc = BitOperations.Crc32C(crc, w);
        }
        for (var i = words.Length * 8; i < data.Length; i++)
        {
            crc = BitOperations.Crc32C(crc, data[i]);
        }
        return crc;
    }
}
