using Ballast.Engine.Volumes;
using Ballast.Iscsi.Reservations;

namespace Ballast.Iscsi.Scsi;

/// <summary>
/// A volume as a SCSI logical unit: shared by every session that reaches it (through its own
/// target or a group target). Holds what SCSI makes per-LU: reservations, mode parameters, the
/// COMPARE AND WRITE range lock, and the I_T nexuses to which unit attentions are broadcast.
/// </summary>
internal sealed class LogicalUnit
{
    private readonly List<LunNexus> _nexuses = [];

    public LogicalUnit(IBlockVolume volume, ReservationStore? store)
    {
        Volume = volume;
        Uid = volume.Uid;
        Name = volume.Name;
        BlockSize = volume.LogicalBlockSize;
        BlockShift = System.Numerics.BitOperations.Log2((uint)BlockSize);
        Reservations = new PersistentReservations(this, store);
    }

    public IBlockVolume Volume { get; set; }
    public Guid Uid { get; }
    public string Name { get; }
    public int BlockSize { get; }
    public int BlockShift { get; }
    public ModeParameters Mode { get; } = new();

    /// <summary>Largest transfer in bytes (MAXIMUM TRANSFER LENGTH).</summary>
    public int MaxTransferLength { get; init; } = 8 << 20;
    public RangeLock WriteLock { get; } = new();
    public PersistentReservations Reservations { get; }

    public long BlockCount => Volume.Size >> BlockShift;

    /// <summary>Writes are refused: a snapshot or read-only volume, or software write protect.</summary>
    public bool WriteProtected => (Volume.Features & VolumeFeatures.ReadOnly) != 0 || Mode.SoftwareWriteProtect;

    /// <summary>Thin provisioning is reported (LBPME) for writable volumes that can deallocate.</summary>
    public bool ThinProvisioned => (Volume.Features & (VolumeFeatures.ReadOnly | VolumeFeatures.Trim)) == VolumeFeatures.Trim;

    public void Attach(LunNexus n)
    {
        lock (_nexuses)
        {
            _nexuses.Add(n);
        }
    }

    public void Detach(LunNexus n)
    {
        lock (_nexuses)
        {
            _nexuses.Remove(n);
        }
    }

    /// <summary>Queues a unit attention on every nexus except <paramref name="except"/>.</summary>
    public void UnitAttentionToAll(Asc asc, LunNexus? except = null)
    {
        lock (_nexuses)
        {
            foreach (var n in _nexuses)
            {
                if (n != except)
                {
                    n.AddUnitAttention(asc);
                }
            }
        }
    }

    public List<LunNexus> Nexuses()
    {
        lock (_nexuses)
        {
            return [.. _nexuses];
        }
    }
}

/// <summary>
/// One I_T_L nexus: a session's view of a logical unit, with its own unit attention queue and
/// PREVENT ALLOW MEDIUM REMOVAL state.
/// </summary>
internal sealed class LunNexus
{
    private readonly Queue<Asc> _unitAttentions = new();
    private int _pending;

    public LunNexus(LogicalUnit lu, int lun, string initiatorPort, string targetPort, object session)
    {
        Lu = lu;
        Lun = lun;
        InitiatorPort = initiatorPort;
        TargetPort = targetPort;
        Session = session;
        LastSize = lu.Volume.Size;
    }

    public LogicalUnit Lu { get; }
    public int Lun { get; }

    /// <summary>SCSI initiator port name: <c>iqn...,i,0x&lt;ISID&gt;</c> (RFC 7143 §4.2.7.3).</summary>
    public string InitiatorPort { get; }

    /// <summary>SCSI target port name: <c>iqn...,t,0x&lt;TPGT&gt;</c>.</summary>
    public string TargetPort { get; }

    /// <summary>The owning session (an I_T nexus); compared by reference.</summary>
    public object Session { get; }

    public bool PreventRemoval { get; set; }

    /// <summary>Volume size last reported; a change raises CAPACITY DATA HAS CHANGED.</summary>
    public long LastSize { get; set; }

    // What this nexus did, for the daemon's client list (interlocked adds when a command ends).
    public long Commands;
    public long BytesRead;
    public long BytesWritten;

    public bool HasUnitAttention => Volatile.Read(ref _pending) != 0 || Lu.Volume.Size != LastSize;

    public void AddUnitAttention(Asc asc)
    {
        lock (_unitAttentions)
        {
            if (_unitAttentions.Count < 16 && !_unitAttentions.Contains(asc))
            {
                _unitAttentions.Enqueue(asc);
            }
            _pending = _unitAttentions.Count;
        }
    }

    public bool TryTakeUnitAttention(out Asc asc)
    {
        var size = Lu.Volume.Size;
        if (size != LastSize)
        {
            LastSize = size;
            asc = Asc.CapacityDataHasChanged;
            return true;
        }
        lock (_unitAttentions)
        {
            var ok = _unitAttentions.TryDequeue(out asc);
            _pending = _unitAttentions.Count;
            return ok;
        }
    }

    public void ClearUnitAttentions()
    {
        lock (_unitAttentions)
        {
            _unitAttentions.Clear();
            _pending = 0;
        }
    }
}
