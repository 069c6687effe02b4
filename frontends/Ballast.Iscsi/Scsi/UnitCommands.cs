using System.Buffers.Binary;

namespace Ballast.Iscsi.Scsi;

/// <summary>
/// Commands about the unit rather than its blocks: TEST UNIT READY, REQUEST SENSE, START STOP
/// UNIT, PREVENT ALLOW MEDIUM REMOVAL, SYNCHRONIZE CACHE, REPORT LUNS, READ DEFECT DATA.
/// </summary>
internal static class UnitCommands
{
    public static ValueTask TestUnitReady(ScsiTask t)
    {
        t.Good();
        return default;
    }

    /// <summary>REQUEST SENSE (SPC-4 §6.29): pending unit attention, else NO SENSE; DESC picks the format.</summary>
    public static ValueTask RequestSense(ScsiTask t)
    {
        var desc = (t.Cdb[1] & 0x01) != 0;
        var alloc = t.Cdb[4];
        Span<byte> sense = stackalloc byte[Sense.MaxLength];
        int length;
        if (t.Nexus is null)
        {
            length = Sense.Build(sense, desc, SenseKey.IllegalRequest, Asc.LogicalUnitNotSupported);
        }
        else if (t.Nexus.HasUnitAttention && t.Nexus.TryTakeUnitAttention(out var ua))
        {
            length = Sense.Build(sense, desc, SenseKey.UnitAttention, ua);
        }
        else
        {
            length = Sense.Build(sense, desc, SenseKey.NoSense, Asc.NoAdditionalSense);
        }
        sense[..length].CopyTo(t.DataIn(length));
        t.Truncate(alloc);
        t.Good();
        return default;
    }

    /// <summary>START STOP UNIT (SBC-3 §5.25): the medium is always there; accepted, nothing to do.</summary>
    public static ValueTask StartStop(ScsiTask t)
    {
        var condition = t.Cdb[4] >> 4;
        if (condition is not (0 or 1 or 2 or 3 or 7 or 0xa or 0xb))
        {
            t.InvalidFieldInCdb();
            return default;
        }
        // LOEJ=1 with START=0 asks to eject; refuse it while medium removal is prevented (§5.25).
        if ((t.Cdb[4] & 0x03) == 0x02 && condition == 0 && AnyPrevent(t.Lu))
        {
            t.CheckCondition(SenseKey.IllegalRequest, new Asc(0x53, 0x02)); // MEDIUM REMOVAL PREVENTED
            return default;
        }
        t.Good();
        return default;
    }

    private static bool AnyPrevent(LogicalUnit lu)
    {
        foreach (var n in lu.Nexuses())
        {
            if (n.PreventRemoval)
            {
                return true;
            }
        }
        return false;
    }

    /// <summary>PREVENT ALLOW MEDIUM REMOVAL (SPC-4 §6.13): remembered per I_T nexus; cleared by resets and nexus loss.</summary>
    public static ValueTask PreventAllow(ScsiTask t)
    {
        var prevent = t.Cdb[4] & 0x03;
        if (prevent > 1)
        {
            t.InvalidFieldInCdb();
            return default;
        }
        t.Nexus!.PreventRemoval = prevent == 1;
        t.Good();
        return default;
    }

    /// <summary>SYNCHRONIZE CACHE(10/16) (SBC-3 §5.22, §5.23): a volume flush covers every range.</summary>
    public static ValueTask SynchronizeCache(ScsiTask t)
    {
        ulong lba;
        uint blocks;
        if (t.Cdb[0] == ScsiOpcodes.SynchronizeCache10)
        {
            lba = t.U32(2);
            blocks = t.U16(7);
        }
        else
        {
            lba = t.U64(2);
            blocks = t.U32(10);
        }
        if (!BlockRange.Check(t, lba, blocks))
        {
            return default;
        }
        return FlushAsync(t);
    }

    [System.Runtime.CompilerServices.AsyncMethodBuilder(typeof(Ballast.Engine.Async.PooledValueTaskBuilder))]
    private static async ValueTask FlushAsync(ScsiTask t)
    {
        // Only completes the task (as a write does): may run on the engine's sync thread.
        await t.Lu.Volume.FlushInlineAsync().ConfigureAwait(false);
        t.Good();
    }

    /// <summary>REPORT LUNS (SPC-4 §6.33): the session's LUNs, single-level peripheral addressing.</summary>
    public static ValueTask ReportLuns(ScsiTask t)
    {
        var select = t.Cdb[2];
        var alloc = t.U32(6);
        if (select is not (0x00 or 0x01 or 0x02) || alloc < 16)
        {
            t.InvalidFieldInCdb();
            return default;
        }
        var luns = t.SessionLuns ?? [];
        var count = 0;
        foreach (var l in luns)
        {
            count += l is null ? 0 : 1;
        }
        if (select == 0x01)
        {
            count = 0; // well-known LUNs only: we have none
        }
        var d = t.DataIn(8 + (8 * count));
        BinaryPrimitives.WriteUInt32BigEndian(d, (uint)(8 * count));
        var o = 8;
        for (var i = 0; i < luns.Length && select != 0x01; i++)
        {
            if (luns[i] != null)
            {
                BinaryPrimitives.WriteUInt64BigEndian(d[o..], Pdu.LunAddress.Encode(i));
                o += 8;
            }
        }
        t.Truncate((int)Math.Min(alloc, int.MaxValue));
        t.Good();
        return default;
    }

    /// <summary>READ DEFECT DATA(10/12) (SBC-3 §5.17, §5.18): there are no defects; the header only.</summary>
    public static ValueTask ReadDefectData(ScsiTask t)
    {
        var ten = t.Cdb[0] == ScsiOpcodes.ReadDefectData10;
        var format = ten ? t.Cdb[2] : t.Cdb[1];
        var alloc = ten ? t.U16(7) : (int)Math.Min(t.U32(6), int.MaxValue);
        var d = t.DataIn(ten ? 4 : 8);
        d[1] = (byte)(format & 0x1f); // no lists: echo the format asked for
        t.Truncate(alloc);
        t.Good();
        return default;
    }
}
