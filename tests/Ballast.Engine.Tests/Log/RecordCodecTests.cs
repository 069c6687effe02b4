using Ballast.Engine.Log;

namespace Ballast.Engine.Tests.Log;

public class RecordCodecTests
{
    [Test]
    public void Batch_round_trips_data_and_metadata_records()
    {
        using var b = new BatchBuilder(64 << 10);
        var payload = TestPools.Pattern(1, 8192);
        var crcs = new[] { Crc32C.Compute(payload.AsSpan(0, 4096)), Crc32C.Compute(payload.AsSpan(4096)) };
        var d1 = new RecordDescriptor { Kind = RecordKind.Data, VolumeId = 7, Lsn = 42, Epoch = 3, Lba = 100, BlockCount = 2, Flags = RecordFlags.Fua };
        Assert.That(b.Add(ref d1, crcs, default, payload), Is.EqualTo(0));
        var d2 = new RecordDescriptor { Kind = RecordKind.VolumeResize, VolumeId = 7, Lsn = 43, Aux = 1 << 30 };
        b.Add(ref d2, default, "hello"u8, default);
        var bytes = b.Finish(9, 4096, 1, out var headerBytes).ToArray();

        Assert.That(BatchFormat.TryReadPrefix(bytes, 9, 4096, 1 << 20, out var hb, out var pb, out var problem), Is.True, problem);
        Assert.That((hb, pb), Is.EqualTo((headerBytes, 2)));
        var records = new List<DecodedRecord>();
        Assert.That(BatchFormat.TryDecodeRecords(bytes.AsSpan(0, hb), pb, records, out problem), Is.True, problem);
        Assert.That(records, Has.Count.EqualTo(2));
        var r0 = records[0].Descriptor;
        Assert.That((r0.Kind, r0.VolumeId, r0.Lsn, r0.Epoch, r0.Lba, r0.BlockCount, r0.Flags), Is.EqualTo((RecordKind.Data, 7u, 42L, 3u, 100L, 2, RecordFlags.Fua)));
        Assert.That(bytes.AsSpan(hb, 8192).SequenceEqual(payload), Is.True);
        Assert.That(records[1].Descriptor.Aux, Is.EqualTo(1L << 30));
        Assert.That(bytes.AsSpan(records[1].InlineOffset, 5).SequenceEqual("hello"u8), Is.True);
    }

    [Test]
    public void A_flipped_header_byte_is_detected()
    {
        using var b = new BatchBuilder(64 << 10);
        var d = new RecordDescriptor { Kind = RecordKind.Trim, VolumeId = 1, Lsn = 1, Lba = 0, BlockCount = 8 };
        b.Add(ref d, default, default, default);
        var bytes = b.Finish(1, 4096, 1, out var hb).ToArray();
        bytes[BatchFormat.FixedHeaderSize + 10] ^= 1;
        var records = new List<DecodedRecord>();
        Assert.That(BatchFormat.TryDecodeRecords(bytes.AsSpan(0, hb), 0, records, out var problem), Is.False);
        Assert.That(problem, Does.Contain("checksum"));
    }

    [Test]
    public void A_batch_from_an_earlier_use_of_the_segment_is_rejected()
    {
        using var b = new BatchBuilder(64 << 10);
        var d = new RecordDescriptor { Kind = RecordKind.Trim, VolumeId = 1, Lsn = 1, BlockCount = 1 };
        b.Add(ref d, default, default, default);
        var bytes = b.Finish(5, 4096, 1, out _).ToArray();
        Assert.That(BatchFormat.TryReadPrefix(bytes, 6, 4096, 1 << 20, out _, out _, out var problem), Is.False);
        Assert.That(problem, Does.Contain("earlier use"));
    }

    [Test]
    public void Header_lengths_that_overflow_the_segment_are_rejected()
    {
        using var b = new BatchBuilder(64 << 10);
        var d = new RecordDescriptor { Kind = RecordKind.Trim, VolumeId = 1, Lsn = 1, BlockCount = 1 };
        b.Add(ref d, default, default, default);
        var bytes = b.Finish(5, 4096, 1, out _).ToArray();
        System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(20), int.MaxValue);
        Assert.That(BatchFormat.TryReadPrefix(bytes, 5, 4096, 1 << 20, out _, out _, out _), Is.False);
    }

    [Test]
    public void Superblock_round_trips_and_the_newer_valid_slot_wins()
    {
        var sb = new Superblock { PoolId = Guid.NewGuid(), Generation = 5, SegmentSize = 1 << 20, SegmentCount = 64, SeqReserved = 99, ReplayStart = new LogPosition(3, 7, 8192), CheckpointLength = 12345, CheckpointCrc = 0xABCD, CheckpointSegments = [4, 9], CleanShutdown = true };
        var slot = new byte[4096];
        sb.Encode(slot);
        var back = Superblock.TryDecode(slot, out var problem);
        Assert.That(back, Is.Not.Null, problem);
        Assert.That(back!.ReplayStart, Is.EqualTo(sb.ReplayStart));
        Assert.That(back.CheckpointSegments, Is.EqualTo(new[] { 4, 9 }));
        Assert.That(back.CleanShutdown, Is.True);
        slot[200] ^= 1;
        Assert.That(Superblock.TryDecode(slot, out problem), Is.Null);
        Assert.That(problem, Does.Contain("checksum"));
    }
}
