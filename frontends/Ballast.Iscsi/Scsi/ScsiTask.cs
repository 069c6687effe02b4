using System.Buffers;
using System.Buffers.Binary;

namespace Ballast.Iscsi.Scsi;

/// <summary>
/// One SCSI command from arrival to response: the CDB, its data buffer (write data received or
/// read data to send), and the outcome (status, sense, data-in length). Pooled per connection and
/// reused, so the I/O path allocates nothing. The transport half (R2T and Data-Out bookkeeping,
/// dispatch) is in <c>Session/ScsiTask.Transport.cs</c>.
/// </summary>
internal sealed partial class ScsiTask
{
    public const int MaxCdbLength = 260;

    public readonly byte[] Cdb = new byte[MaxCdbLength];
    public int CdbLength;

    public uint Itt;
    public uint CmdSn;
    public bool Immediate;
    public ulong LunField;
    public bool ReadBit;
    public bool WriteBit;
    public uint ExpectedLength;

    /// <summary>The LUN this command addresses (null when the LUN does not exist).</summary>
    public LunNexus? Nexus;

    /// <summary>Data buffer: write data as received, or read data to send. Rented from the shared pool.</summary>
    public byte[]? Buffer;

    /// <summary>Bytes of write data received into <see cref="Buffer"/>.</summary>
    public int DataOutLength;

    /// <summary>Bytes of read data the command produced (may exceed <see cref="ExpectedLength"/>: overflow).</summary>
    public int DataInLength;

    public byte Status;
    public readonly byte[] SenseData = new byte[Sense.MaxLength];
    public int SenseLength;

    // Set by a handler that returns the volume's ValueTask as is (READ, WRITE): what to do when it
    // completes. A held range lock is released either way; on success the command is GOOD.
    public int HeldRangeLock = -1;
    public bool GoodOnSuccess;
    public int DataInOnSuccess = -1;

    /// <summary>Set by ABORT TASK / resets: the response is not sent.</summary>
    public volatile bool Aborted;

    /// <summary>The only command in flight on its connection, and nothing more received: a write may be written on the receive loop (WriteFlags.Alone).</summary>
    public bool Alone;

    public byte Opcode => Cdb[0];

    public LogicalUnit Lu => Nexus!.Lu;

    public ReadOnlySpan<byte> DataOut => Buffer.AsSpan(0, DataOutLength);

    /// <summary>A buffer of at least <paramref name="length"/> bytes for data-in, zeroed over that length.</summary>
    public Span<byte> DataIn(int length)
    {
        EnsureBuffer(length);
        var span = Buffer.AsSpan(0, length);
        span.Clear();
        DataInLength = length;
        return span;
    }

    public void EnsureBuffer(int length)
    {
        if (Buffer != null && Buffer.Length >= length)
        {
            return;
        }
        ReturnBuffer();
        Buffer = ArrayPool<byte>.Shared.Rent(Math.Max(length, 512));
    }

    public void ReturnBuffer()
    {
        if (Buffer != null)
        {
            ArrayPool<byte>.Shared.Return(Buffer);
            Buffer = null;
        }
    }

    /// <summary>Cuts data-in to the CDB's allocation length (SPC-4 §4.2.5.6: never an error).</summary>
    public void Truncate(int allocationLength)
    {
        if (DataInLength > allocationLength)
        {
            DataInLength = allocationLength;
        }
    }

    public void Good() => Status = ScsiStatus.Good;

    public void CheckCondition(SenseKey key, Asc asc, ulong? information = null, int fieldPointer = -1)
    {
        Status = ScsiStatus.CheckCondition;
        DataInLength = 0;
        SenseLength = Sense.Build(SenseData, Nexus?.Lu.Mode.DescriptorSense ?? false, key, asc, information, fieldPointer);
    }

    public void IllegalRequest(Asc asc) => CheckCondition(SenseKey.IllegalRequest, asc);

    public void InvalidFieldInCdb() => CheckCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);

    /// <summary>INVALID FIELD IN CDB pointing at the offending CDB byte.</summary>
    public void InvalidFieldInCdb(int cdbByte) => CheckCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb, fieldPointer: cdbByte);

    public void ReservationConflict()
    {
        Status = ScsiStatus.ReservationConflict;
        DataInLength = 0;
        SenseLength = 0;
    }

    public ushort U16(int offset) => BinaryPrimitives.ReadUInt16BigEndian(Cdb.AsSpan(offset));
    public uint U32(int offset) => BinaryPrimitives.ReadUInt32BigEndian(Cdb.AsSpan(offset));
    public ulong U64(int offset) => BinaryPrimitives.ReadUInt64BigEndian(Cdb.AsSpan(offset));
    public int U24(int offset) => (Cdb[offset] << 16) | (Cdb[offset + 1] << 8) | Cdb[offset + 2];

    /// <summary>Clears the SCSI half for reuse.</summary>
    private void ResetScsi()
    {
        CdbLength = 0;
        Nexus = null;
        DataOutLength = 0;
        DataInLength = 0;
        Status = ScsiStatus.Good;
        SenseLength = 0;
        Aborted = false;
        Alone = false;
        HeldRangeLock = -1;
        GoodOnSuccess = false;
        DataInOnSuccess = -1;
    }

    /// <summary>Runs the completion a handler left behind (see <see cref="HeldRangeLock"/>), then maps a failure to sense data.</summary>
    private void AfterHandler(Exception? error)
    {
        if (HeldRangeLock >= 0)
        {
            Lu.WriteLock.Release(HeldRangeLock);
            HeldRangeLock = -1;
        }
        if (error != null)
        {
            OnFailure(error);
        }
        else
        {
            if (DataInOnSuccess >= 0)
            {
                DataInLength = DataInOnSuccess;
            }
            if (GoodOnSuccess)
            {
                Good();
            }
        }
        GoodOnSuccess = false;
        DataInOnSuccess = -1;
    }
}
