using System.Buffers.Binary;
using System.Text;
using Ballast.Iscsi.Scsi;

namespace Ballast.Iscsi.Reservations;

/// <summary>
/// SPC-4 persistent reservations (§5.13) of one logical unit, plus the older SPC-2 RESERVE/RELEASE
/// reservation. Registrations are keyed by I_T nexus (initiator port name + target port name), so
/// they survive reconnects and, through <see cref="ReservationStore"/>, restarts. Every change is
/// saved before the command completes.
/// </summary>
internal sealed class PersistentReservations
{
    private readonly LogicalUnit _lu;
    private readonly ReservationStore? _store;
    private readonly object _gate = new();
    private readonly List<Registration> _registrations = [];
    private uint _generation;
    private bool _aptpl;
    private ReservationType? _type;
    private Registration? _holder; // null with a type set: an all-registrants reservation
    private object? _legacyHolder; // SPC-2 RESERVE(6/10): the holding session
    private volatile bool _any;

    public PersistentReservations(LogicalUnit lu, ReservationStore? store)
    {
        _lu = lu;
        _store = store;
    }

    /// <summary>Restores saved state (at first use of the LU after a start).</summary>
    public void Load(ReservationSnapshot s)
    {
        lock (_gate)
        {
            _generation = s.Generation;
            _aptpl = s.Aptpl;
            _registrations.Clear();
            _registrations.AddRange(s.Registrations);
            _type = s.Type;
            _holder = s.Type is { } t && !ReservationTypes.AllRegistrants(t)
                ? _registrations.Find(r => r.InitiatorPort == s.HolderInitiatorPort && r.TargetPort == s.HolderTargetPort)
                : null;
            if (_holder is null && _type is { } t2 && !ReservationTypes.AllRegistrants(t2))
            {
                _type = null;
            }
            Update();
        }
    }

    private void Update() => _any = _type != null || _legacyHolder != null;

    /// <summary>
    /// True when the command must get RESERVATION CONFLICT. The fast path (no reservation) is a
    /// volatile read.
    /// </summary>
    public bool Conflicts(LunNexus nexus, ReservationClass cls, byte opcode)
    {
        if (!_any || cls == ReservationClass.Allowed)
        {
            return false;
        }
        lock (_gate)
        {
            if (_legacyHolder != null && _legacyHolder != nexus.Session)
            {
                return true;
            }
            if (_type is not { } type)
            {
                return false;
            }
            if (IsHolder(nexus) || (ReservationTypes.RegistrantsAccess(type) && Find(nexus) != null))
            {
                return false;
            }
            return cls == ReservationClass.Write || ReservationTypes.ExclusiveAccess(type);
        }
    }

    private Registration? Find(LunNexus n) =>
        _registrations.Find(r => r.InitiatorPort == n.InitiatorPort && r.TargetPort == n.TargetPort);

    private bool IsHolder(LunNexus n)
    {
        if (_type is not { } type)
        {
            return false;
        }
        if (ReservationTypes.AllRegistrants(type))
        {
            return Find(n) != null;
        }
        return _holder != null && _holder.InitiatorPort == n.InitiatorPort && _holder.TargetPort == n.TargetPort;
    }

    // ---- SPC-2 RESERVE / RELEASE ----

    /// <summary>RESERVE(6)/(10): conflict if another session holds it or persistent reservations are in use.</summary>
    public bool LegacyReserve(LunNexus n)
    {
        lock (_gate)
        {
            if ((_legacyHolder != null && _legacyHolder != n.Session) || _type != null || _registrations.Count > 0)
            {
                return false;
            }
            _legacyHolder = n.Session;
            Update();
            return true;
        }
    }

    /// <summary>RELEASE(6)/(10): releasing a reservation held by someone else is a no-op (SPC-2 §7.21).</summary>
    public bool LegacyRelease(LunNexus n)
    {
        lock (_gate)
        {
            if (_type != null)
            {
                return false;
            }
            if (_legacyHolder == n.Session)
            {
                _legacyHolder = null;
                Update();
            }
            return true;
        }
    }

    /// <summary>An I_T nexus went away (logout, connection loss) or a reset happened: SPC-2 reservations end.</summary>
    public void ReleaseLegacy(object? session = null)
    {
        lock (_gate)
        {
            if (_legacyHolder != null && (session is null || _legacyHolder == session))
            {
                _legacyHolder = null;
                Update();
            }
        }
    }

    // ---- PERSISTENT RESERVE IN (SPC-4 §6.15) ----

    public void In(ScsiTask t)
    {
        var action = t.Cdb[1] & 0x1f;
        var alloc = t.U16(7);
        lock (_gate)
        {
            switch (action)
            {
                case 0: // READ KEYS
                {
                    var d = t.DataIn(8 + (8 * _registrations.Count));
                    BinaryPrimitives.WriteUInt32BigEndian(d, _generation);
                    BinaryPrimitives.WriteUInt32BigEndian(d[4..], (uint)(8 * _registrations.Count));
                    for (var i = 0; i < _registrations.Count; i++)
                    {
                        BinaryPrimitives.WriteUInt64BigEndian(d[(8 + (8 * i))..], _registrations[i].Key);
                    }
                    break;
                }
                case 1: // READ RESERVATION
                {
                    var d = t.DataIn(_type is null ? 8 : 24);
                    BinaryPrimitives.WriteUInt32BigEndian(d, _generation);
                    if (_type is { } type)
                    {
                        BinaryPrimitives.WriteUInt32BigEndian(d[4..], 16);
                        // All-registrants reservations report key 0 (§6.15.3.3).
                        BinaryPrimitives.WriteUInt64BigEndian(d[8..], _holder?.Key ?? 0);
                        d[21] = (byte)type; // scope 0 (LU_SCOPE) in the high nibble
                    }
                    break;
                }
                case 2: // REPORT CAPABILITIES
                {
                    var d = t.DataIn(8);
                    d[1] = 8;
                    // CRH=1 (RESERVE/RELEASE handled per §5.13.3), ATP_C=0, SIP_C=0, PTPL_C=1.
                    d[2] = 0x10 | 0x01;
                    // TMV=1, ALLOW COMMANDS=001b, PTPL_A: state persists through power loss.
                    d[3] = (byte)(0x80 | 0x10 | 0x01);
                    d[4] = 0x80 | 0x40 | 0x20 | 0x08 | 0x02; // WR_EX_AR, EX_AC_RO, WR_EX_RO, EX_AC, WR_EX
                    d[5] = 0x01; // EX_AC_AR
                    break;
                }
                case 3: // READ FULL STATUS
                {
                    var ids = new byte[_registrations.Count][];
                    var total = 0;
                    for (var i = 0; i < ids.Length; i++)
                    {
                        ids[i] = TransportId(_registrations[i].InitiatorPort);
                        total += 24 + ids[i].Length;
                    }
                    var d = t.DataIn(8 + total);
                    BinaryPrimitives.WriteUInt32BigEndian(d, _generation);
                    BinaryPrimitives.WriteUInt32BigEndian(d[4..], (uint)total);
                    var o = 8;
                    for (var i = 0; i < ids.Length; i++)
                    {
                        var r = _registrations[i];
                        BinaryPrimitives.WriteUInt64BigEndian(d[o..], r.Key);
                        var holder = _type is { } ty && (ReservationTypes.AllRegistrants(ty) || ReferenceEquals(r, _holder));
                        d[o + 12] = (byte)(holder ? 0x01 : 0x00);
                        d[o + 13] = holder ? (byte)_type!.Value : (byte)0;
                        BinaryPrimitives.WriteUInt16BigEndian(d[(o + 18)..], 1); // relative target port identifier
                        BinaryPrimitives.WriteUInt32BigEndian(d[(o + 20)..], (uint)ids[i].Length);
                        ids[i].CopyTo(d[(o + 24)..]);
                        o += 24 + ids[i].Length;
                    }
                    break;
                }
                default:
                    t.InvalidFieldInCdb();
                    return;
            }
        }
        t.Truncate(alloc);
        t.Good();
    }

    /// <summary>iSCSI TransportID, format 01b: name ",i,0x" ISID (SPC-4 §7.6.4.6), NUL-padded to 4 bytes.</summary>
    private static byte[] TransportId(string initiatorPort)
    {
        var name = Encoding.UTF8.GetBytes(initiatorPort);
        var len = (name.Length + 1 + 3) & ~3;
        var id = new byte[4 + len];
        id[0] = 0x40 | 0x05; // FORMAT CODE 01b, PROTOCOL IDENTIFIER 5 (iSCSI)
        BinaryPrimitives.WriteUInt16BigEndian(id.AsSpan(2), (ushort)len);
        name.CopyTo(id, 4);
        return id;
    }

    // ---- PERSISTENT RESERVE OUT (SPC-4 §6.16) ----

    public void Out(ScsiTask t)
    {
        var action = t.Cdb[1] & 0x1f;
        var scope = t.Cdb[2] >> 4;
        var typeByte = (byte)(t.Cdb[2] & 0x0f);
        var length = t.U32(5);
        if (action > 6)
        {
            // REGISTER AND MOVE (7) and REPLACE LOST RESERVATION (8) are not supported.
            t.InvalidFieldInCdb();
            return;
        }
        if (length != 24)
        {
            // Without SPEC_I_PT the parameter list is exactly 24 bytes (§6.16.3).
            t.CheckCondition(SenseKey.IllegalRequest, Asc.ParameterListLengthError);
            return;
        }
        if (t.DataOutLength < 24)
        {
            t.CheckCondition(SenseKey.IllegalRequest, Asc.ParameterListLengthError);
            return;
        }
        var p = t.DataOut;
        var key = BinaryPrimitives.ReadUInt64BigEndian(p);
        var saKey = BinaryPrimitives.ReadUInt64BigEndian(p[8..]);
        var flags = p[20];
        if ((flags & 0x08) != 0 || (flags & 0x04) != 0)
        {
            // SPEC_I_PT and ALL_TG_PT are not supported (REPORT CAPABILITIES says so).
            t.CheckCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInParameterList);
            return;
        }
        var aptpl = (flags & 0x01) != 0;
        var n = t.Nexus!;
        bool changed;
        lock (_gate)
        {
            if (_legacyHolder != null && _legacyHolder != n.Session)
            {
                t.ReservationConflict();
                return;
            }
            var mine = Find(n);
            changed = action switch
            {
                0 or 6 => Register(t, n, mine, key, saKey, aptpl, ignoreExisting: action == 6),
                1 => Reserve(t, n, mine, key, scope, typeByte),
                2 => Release(t, n, mine, key, scope, typeByte),
                3 => Clear(t, n, mine, key),
                _ => Preempt(t, n, mine, key, saKey, scope, typeByte),
            };
            Update();
            if (changed && _store != null)
            {
                _store.Save(_lu.Uid, new ReservationSnapshot(_generation, _aptpl, [.. _registrations], _type, _holder?.InitiatorPort, _holder?.TargetPort));
            }
        }
    }

    private bool Register(ScsiTask t, LunNexus n, Registration? mine, ulong key, ulong saKey, bool aptpl, bool ignoreExisting)
    {
        if (mine is null)
        {
            if (!ignoreExisting && key != 0)
            {
                t.ReservationConflict();
                return false;
            }
            t.Good();
            if (saKey == 0)
            {
                return false;
            }
            _registrations.Add(new Registration(n.InitiatorPort, n.TargetPort, saKey));
            _generation++;
            _aptpl = aptpl;
            return true;
        }
        if (!ignoreExisting && key != mine.Key)
        {
            t.ReservationConflict();
            return false;
        }
        t.Good();
        _generation++;
        _aptpl = aptpl;
        if (saKey == 0)
        {
            Unregister(mine, n);
            return true;
        }
        var updated = mine with { Key = saKey };
        _registrations[_registrations.IndexOf(mine)] = updated;
        if (ReferenceEquals(_holder, mine))
        {
            _holder = updated;
        }
        return true;
    }

    /// <summary>Removes a registration; a holder's reservation goes with it (§5.13.11.2.3).</summary>
    private void Unregister(Registration r, LunNexus? by)
    {
        _registrations.Remove(r);
        if (_type is { } type)
        {
            if (ReferenceEquals(_holder, r) || (ReservationTypes.AllRegistrants(type) && _registrations.Count == 0))
            {
                var registrantsOnly = type is ReservationType.WriteExclusiveRegistrantsOnly or ReservationType.ExclusiveAccessRegistrantsOnly;
                _type = null;
                _holder = null;
                if (registrantsOnly)
                {
                    NotifyRegistrants(Asc.ReservationsReleased, by);
                }
            }
        }
    }

    private bool Reserve(ScsiTask t, LunNexus n, Registration? mine, ulong key, int scope, byte typeByte)
    {
        if (mine is null || key != mine.Key)
        {
            t.ReservationConflict();
            return false;
        }
        if (scope != 0 || !ReservationTypes.IsValid(typeByte))
        {
            t.InvalidFieldInCdb();
            return false;
        }
        var type = (ReservationType)typeByte;
        if (_type is { } current)
        {
            // Reserving again with the same type is fine for the holder; anything else conflicts (§5.13.10).
            if (IsHolder(n) && current == type)
            {
                t.Good();
            }
            else
            {
                t.ReservationConflict();
            }
            return false;
        }
        _type = type;
        _holder = ReservationTypes.AllRegistrants(type) ? null : mine;
        t.Good();
        return true;
    }

    private bool Release(ScsiTask t, LunNexus n, Registration? mine, ulong key, int scope, byte typeByte)
    {
        if (mine is null || key != mine.Key)
        {
            t.ReservationConflict();
            return false;
        }
        if (_type is not { } type || !IsHolder(n))
        {
            t.Good();
            return false;
        }
        if (scope != 0 || typeByte != (byte)type)
        {
            t.CheckCondition(SenseKey.IllegalRequest, Asc.InvalidReleaseOfPersistentReservation);
            return false;
        }
        _type = null;
        _holder = null;
        if (type is not (ReservationType.WriteExclusive or ReservationType.ExclusiveAccess))
        {
            NotifyRegistrants(Asc.ReservationsReleased, n);
        }
        t.Good();
        return true;
    }

    private bool Clear(ScsiTask t, LunNexus n, Registration? mine, ulong key)
    {
        if (mine is null || key != mine.Key)
        {
            t.ReservationConflict();
            return false;
        }
        NotifyRegistrants(Asc.ReservationsPreempted, n);
        _registrations.Clear();
        _type = null;
        _holder = null;
        _generation++;
        t.Good();
        return true;
    }

    private bool Preempt(ScsiTask t, LunNexus n, Registration? mine, ulong key, ulong saKey, int scope, byte typeByte)
    {
        if (mine is null || key != mine.Key)
        {
            t.ReservationConflict();
            return false;
        }
        if (_type is { } type)
        {
            if (scope != 0 || !ReservationTypes.IsValid(typeByte))
            {
                t.InvalidFieldInCdb();
                return false;
            }
            var newType = (ReservationType)typeByte;
            if (ReservationTypes.AllRegistrants(type))
            {
                if (saKey == 0)
                {
                    // Remove every other registration; this nexus holds the new reservation (§5.13.11.2.4.4).
                    RemoveWhere(r => !ReferenceEquals(r, mine), n);
                    _type = newType;
                    _holder = ReservationTypes.AllRegistrants(newType) ? null : mine;
                }
                else if (RemoveWhere(r => r.Key == saKey && !ReferenceEquals(r, mine), n) == 0)
                {
                    t.ReservationConflict();
                    return false;
                }
            }
            else if (_holder != null && saKey == _holder.Key)
            {
                RemoveWhere(r => r.Key == saKey && !ReferenceEquals(r, mine), n);
                _type = newType;
                _holder = ReservationTypes.AllRegistrants(newType) ? null : mine;
            }
            else if (!PreemptRegistrations(t, n, mine, saKey))
            {
                return false;
            }
        }
        else if (!PreemptRegistrations(t, n, mine, saKey))
        {
            return false;
        }
        _generation++;
        t.Good();
        return true;
    }

    /// <summary>PREEMPT that leaves the reservation alone: removes the registrations holding the service action key (SPC-4 PERSISTENT RESERVE OUT, PREEMPT).</summary>
    private bool PreemptRegistrations(ScsiTask t, LunNexus n, Registration mine, ulong saKey)
    {
        if (saKey == 0)
        {
            t.CheckCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInParameterList);
            return false;
        }
        if (RemoveWhere(r => r.Key == saKey && !ReferenceEquals(r, mine), n) == 0)
        {
            t.ReservationConflict();
            return false;
        }
        return true;
    }

    private int RemoveWhere(Predicate<Registration> match, LunNexus by)
    {
        var removed = 0;
        for (var i = _registrations.Count - 1; i >= 0; i--)
        {
            var r = _registrations[i];
            if (match(r))
            {
                _registrations.RemoveAt(i);
                removed++;
                foreach (var x in _lu.Nexuses())
                {
                    if (x != by && x.InitiatorPort == r.InitiatorPort && x.TargetPort == r.TargetPort)
                    {
                        x.AddUnitAttention(Asc.RegistrationsPreempted);
                    }
                }
            }
        }
        return removed;
    }

    private void NotifyRegistrants(Asc asc, LunNexus? except)
    {
        foreach (var x in _lu.Nexuses())
        {
            if (x != except && _registrations.Exists(r => r.InitiatorPort == x.InitiatorPort && r.TargetPort == x.TargetPort))
            {
                x.AddUnitAttention(asc);
            }
        }
    }

    /// <summary>For tests and logging.</summary>
    public (uint Generation, int Registrations, ReservationType? Type) Describe()
    {
        lock (_gate)
        {
            return (_generation, _registrations.Count, _type);
        }
    }
}
