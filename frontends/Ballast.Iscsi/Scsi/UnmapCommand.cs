using System.Buffers.Binary;

namespace Ballast.Iscsi.Scsi;

/// <summary>UNMAP (SBC-3 §5.28): deallocates each block descriptor's range with <c>TrimAsync</c>.</summary>
internal static class UnmapCommand
{
    public const uint MaxDescriptors = 256;
    private const int DescriptorLength = 16;

    public static ValueTask Execute(ScsiTask t)
    {
        var lu = t.Lu;
        if ((t.Cdb[1] & 0x01) != 0 || !lu.ThinProvisioned)
        {
            t.InvalidFieldInCdb(); // ANCHOR is not supported; UNMAP only on thin LUs
            return default;
        }
        var listLength = t.U16(7);
        if (listLength == 0)
        {
            t.Good();
            return default;
        }
        if (listLength < 8 || t.DataOutLength < listLength)
        {
            t.CheckCondition(SenseKey.IllegalRequest, Asc.ParameterListLengthError);
            return default;
        }
        var p = t.DataOut[..listLength];
        var descriptorBytes = BinaryPrimitives.ReadUInt16BigEndian(p[2..]);
        if (descriptorBytes % DescriptorLength != 0 || 8 + descriptorBytes > listLength)
        {
            t.CheckCondition(SenseKey.IllegalRequest, Asc.ParameterListLengthError);
            return default;
        }
        var count = descriptorBytes / DescriptorLength;
        if (count > MaxDescriptors)
        {
            t.CheckCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInParameterList);
            return default;
        }
        // Check every range before changing anything (§5.28.2: none of the ranges may be out of range).
        for (var i = 0; i < count; i++)
        {
            var d = p.Slice(8 + (i * DescriptorLength));
            if (!BlockRange.Check(t, BinaryPrimitives.ReadUInt64BigEndian(d), BinaryPrimitives.ReadUInt32BigEndian(d[8..])))
            {
                return default;
            }
        }
        return count == 0 ? Done(t) : TrimAsync(t, count);
    }

    private static ValueTask Done(ScsiTask t)
    {
        t.Good();
        return default;
    }

    private static async ValueTask TrimAsync(ScsiTask t, int count)
    {
        var lu = t.Lu;
        for (var i = 0; i < count; i++)
        {
            var d = t.Buffer.AsMemory(8 + (i * DescriptorLength), DescriptorLength);
            var lba = BinaryPrimitives.ReadUInt64BigEndian(d.Span);
            var blocks = BinaryPrimitives.ReadUInt32BigEndian(d.Span[8..]);
            if (blocks == 0)
            {
                continue;
            }
            var offset = (long)lba << lu.BlockShift;
            var length = (long)blocks << lu.BlockShift;
            var token = await lu.WriteLock.AcquireAsync(offset, length, exclusive: false).ConfigureAwait(false);
            try
            {
                await lu.Volume.TrimAsync(offset, length).ConfigureAwait(false);
            }
            finally
            {
                lu.WriteLock.Release(token);
            }
        }
        t.Good();
    }
}
