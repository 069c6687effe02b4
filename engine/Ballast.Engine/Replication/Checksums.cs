using System.Buffers;
using System.Buffers.Binary;
using Ballast.Engine.Log;
using Ballast.Engine.Volumes;

namespace Ballast.Engine.Replication;

/// <summary>CRC32C per chunk of a block range: what "volume verify" compares across replicas.</summary>
public static class Checksums
{
    public const int MaxChunkBlocks = 256;

    /// <summary>4 bytes per chunk of <paramref name="chunkBlocks"/> blocks over [lba, lba+blocks), the last chunk possibly shorter.</summary>
    public static async Task<byte[]> ComputeAsync(EngineVolume v, long lba, int blocks, int chunkBlocks)
    {
        var volumeBlocks = (v.Size + PoolLayout.BlockSize - 1) >> PoolLayout.BlockShift;
        if (lba < 0 || blocks <= 0 || chunkBlocks <= 0 || chunkBlocks > MaxChunkBlocks || lba > volumeBlocks - blocks)
        {
            throw new ArgumentException($"checksum range {lba}+{blocks} (chunks of {chunkBlocks}) is outside volume {v.Name}");
        }
        var chunks = (blocks + chunkBlocks - 1) / chunkBlocks;
        var result = new byte[4 * chunks];
        var buf = ArrayPool<byte>.Shared.Rent(chunkBlocks << PoolLayout.BlockShift);
        try
        {
            for (var i = 0; i < chunks; i++)
            {
                var n = Math.Min(chunkBlocks, blocks - (i * chunkBlocks));
                var offset = (lba + ((long)i * chunkBlocks)) << PoolLayout.BlockShift;
                var length = (int)Math.Min((long)n << PoolLayout.BlockShift, v.Size - offset);
                await v.ReadAsync(offset, buf.AsMemory(0, length)).ConfigureAwait(false);
                BinaryPrimitives.WriteUInt32LittleEndian(result.AsSpan(4 * i), Crc32C.Compute(buf.AsSpan(0, length)));
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buf);
        }
        return result;
    }
}
