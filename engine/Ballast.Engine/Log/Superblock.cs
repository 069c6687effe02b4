using System.Buffers.Binary;

namespace Ballast.Engine.Log;

/// <summary>Where replay starts: a log segment, the sequence number it must carry, and an offset in it.</summary>
public readonly record struct LogPosition(int Segment, ulong Seq, int Offset)
{
    public override string ToString() => $"segment {Segment} (seq {Seq}) offset {Offset}";
}

/// <summary>
/// The pool's root record, written to two alternating 4 KiB slots at the device start. The valid
/// slot with the higher generation wins, so a torn superblock write loses nothing.
/// </summary>
public sealed class Superblock
{
    public const ulong Magic = 0x53_54_53_41_4C_4C_41_42; // "BALLASTS"
    public const uint CurrentVersion = 1;
    public const int MaxCheckpointSegments = (PoolLayout.BlockSize - 96) / 4;

    public Guid PoolId { get; init; }
    public ulong Generation { get; set; }
    public int SegmentSize { get; init; }
    public int SegmentCount { get; set; }
    /// <summary>No segment on the device carries a sequence number above this one.</summary>
    public ulong SeqReserved { get; set; }
    public LogPosition ReplayStart { get; set; }
    public long CheckpointLength { get; set; }
    public uint CheckpointCrc { get; set; }
    public int[] CheckpointSegments { get; set; } = [];
    /// <summary>Set by a clean shutdown: nothing was written after the replay start, so the log may continue in place.</summary>
    public bool CleanShutdown { get; set; }

    /// <summary>A copy to change and write; the one in use is replaced only once the write is synced.</summary>
    public Superblock Copy()
    {
        var c = (Superblock)MemberwiseClone();
        c.CheckpointSegments = [.. CheckpointSegments];
        return c;
    }

    public void Encode(Span<byte> slot)
    {
        if (CheckpointSegments.Length > MaxCheckpointSegments)
        {
            throw new InvalidOperationException($"checkpoint spans {CheckpointSegments.Length} segments; at most {MaxCheckpointSegments} fit the superblock");
        }
        slot[..PoolLayout.BlockSize].Clear();
        BinaryPrimitives.WriteUInt64LittleEndian(slot, Magic);
        BinaryPrimitives.WriteUInt32LittleEndian(slot[8..], CurrentVersion);
        PoolId.TryWriteBytes(slot[16..]);
        BinaryPrimitives.WriteUInt64LittleEndian(slot[32..], Generation);
        BinaryPrimitives.WriteInt32LittleEndian(slot[40..], SegmentSize);
        BinaryPrimitives.WriteInt32LittleEndian(slot[44..], SegmentCount);
        BinaryPrimitives.WriteUInt64LittleEndian(slot[48..], SeqReserved);
        BinaryPrimitives.WriteInt32LittleEndian(slot[56..], ReplayStart.Segment);
        BinaryPrimitives.WriteUInt64LittleEndian(slot[64..], ReplayStart.Seq);
        BinaryPrimitives.WriteInt32LittleEndian(slot[72..], ReplayStart.Offset);
        BinaryPrimitives.WriteUInt32LittleEndian(slot[76..], CleanShutdown ? 1u : 0u);
        BinaryPrimitives.WriteInt64LittleEndian(slot[80..], CheckpointLength);
        BinaryPrimitives.WriteUInt32LittleEndian(slot[88..], CheckpointCrc);
        BinaryPrimitives.WriteInt32LittleEndian(slot[92..], CheckpointSegments.Length);
        for (var i = 0; i < CheckpointSegments.Length; i++)
        {
            BinaryPrimitives.WriteInt32LittleEndian(slot[(96 + 4 * i)..], CheckpointSegments[i]);
        }
        BinaryPrimitives.WriteUInt32LittleEndian(slot[12..], Crc32C.Compute(slot[..PoolLayout.BlockSize]));
    }

    /// <summary>Decodes a slot; null when it is blank, torn or not ours. Every field is range-checked.</summary>
    public static Superblock? TryDecode(ReadOnlySpan<byte> slot, out string? problem)
    {
        problem = null;
        if (BinaryPrimitives.ReadUInt64LittleEndian(slot) != Magic)
        {
            problem = "no superblock magic";
            return null;
        }
        var stored = BinaryPrimitives.ReadUInt32LittleEndian(slot[12..]);
        Span<byte> copy = stackalloc byte[PoolLayout.BlockSize];
        slot[..PoolLayout.BlockSize].CopyTo(copy);
        BinaryPrimitives.WriteUInt32LittleEndian(copy[12..], 0);
        if (Crc32C.Compute(copy) != stored)
        {
            problem = "superblock checksum mismatch";
            return null;
        }
        var version = BinaryPrimitives.ReadUInt32LittleEndian(slot[8..]);
        if (version != CurrentVersion)
        {
            problem = $"superblock version {version} is not supported (this build reads {CurrentVersion})";
            return null;
        }
        var cpCount = BinaryPrimitives.ReadInt32LittleEndian(slot[92..]);
        if (cpCount < 0 || cpCount > MaxCheckpointSegments)
        {
            problem = $"superblock lists {cpCount} checkpoint segments";
            return null;
        }
        var cps = new int[cpCount];
        for (var i = 0; i < cpCount; i++)
        {
            cps[i] = BinaryPrimitives.ReadInt32LittleEndian(slot[(96 + 4 * i)..]);
        }
        return new Superblock
        {
            PoolId = new Guid(slot.Slice(16, 16)),
            Generation = BinaryPrimitives.ReadUInt64LittleEndian(slot[32..]),
            SegmentSize = BinaryPrimitives.ReadInt32LittleEndian(slot[40..]),
            SegmentCount = BinaryPrimitives.ReadInt32LittleEndian(slot[44..]),
            SeqReserved = BinaryPrimitives.ReadUInt64LittleEndian(slot[48..]),
            ReplayStart = new LogPosition(
                BinaryPrimitives.ReadInt32LittleEndian(slot[56..]),
                BinaryPrimitives.ReadUInt64LittleEndian(slot[64..]),
                BinaryPrimitives.ReadInt32LittleEndian(slot[72..])),
            CheckpointLength = BinaryPrimitives.ReadInt64LittleEndian(slot[80..]),
            CheckpointCrc = BinaryPrimitives.ReadUInt32LittleEndian(slot[88..]),
            CheckpointSegments = cps,
            CleanShutdown = (BinaryPrimitives.ReadUInt32LittleEndian(slot[76..]) & 1) != 0,
        };
    }
}
