using System.Net;
using Ballast.Iscsi.Negotiation;
using Ballast.Iscsi.Scsi;
using Ballast.Iscsi.Transport;

namespace Ballast.Iscsi.Session;

/// <summary>
/// A logged-in session (one connection: MaxConnections is 1, ErrorRecoveryLevel 0): the I_T
/// nexus, its LUN table, and the command window (RFC 7143 §4.2.2.1). MaxCmdSN only grows: it
/// advances by one whenever a non-immediate command retires, so at most CommandWindow commands
/// are in flight.
/// </summary>
internal sealed class IscsiSession
{
    private uint _expCmdSn;
    private uint _maxCmdSn;

    public IscsiSession(ushort tsih, string initiatorName, byte[] isid, string targetName, bool discovery, uint initialCmdSn, int window)
    {
        Tsih = tsih;
        InitiatorName = initiatorName;
        Isid = isid;
        TargetName = targetName;
        Discovery = discovery;
        _expCmdSn = initialCmdSn;
        _maxCmdSn = initialCmdSn + (uint)window - 1;
        Since = DateTimeOffset.UtcNow;
        InitiatorPort = $"{initiatorName},i,0x{Convert.ToHexStringLower(isid)}";
        TargetPort = $"{targetName},t,0x0001";
    }

    public ushort Tsih { get; }
    public string InitiatorName { get; }
    public byte[] Isid { get; }
    public string TargetName { get; }
    public bool Discovery { get; }
    public DateTimeOffset Since { get; }
    public string InitiatorPort { get; }
    public string TargetPort { get; }
    public LunNexus?[] Luns { get; set; } = [];
    public IReadOnlyList<string> VolumeNames { get; set; } = [];
    public IscsiConnection? Connection { get; set; }
    public OperationalParameters? Parameters { get; set; }

    public uint ExpCmdSn => Volatile.Read(ref _expCmdSn);
    public uint MaxCmdSn => Volatile.Read(ref _maxCmdSn);

    /// <summary>Serial number arithmetic (RFC 1982) on 32 bits: a &lt; b.</summary>
    public static bool Less(uint a, uint b) => a != b && (int)(a - b) < 0;

    /// <summary>ExpCmdSN &lt;= cmdSn &lt;= MaxCmdSN.</summary>
    public bool InWindow(uint cmdSn) => !Less(cmdSn, ExpCmdSn) && !Less(MaxCmdSn, cmdSn);

    /// <summary>A non-immediate command with this CmdSN was accepted (receive loop only).</summary>
    public void Accept(uint cmdSn) => Volatile.Write(ref _expCmdSn, cmdSn + 1);

    /// <summary>A non-immediate command retired: one more may be sent.</summary>
    public void Retire() => Interlocked.Increment(ref _maxCmdSn);

    public IscsiSessionInfo Describe(EndPoint? peer)
    {
        var luns = new List<IscsiLunInfo>(Luns.Length);
        foreach (var n in Luns)
        {
            if (n != null)
            {
                luns.Add(new IscsiLunInfo(n.Lun, n.Lu.Name, Interlocked.Read(ref n.Commands), Interlocked.Read(ref n.BytesRead), Interlocked.Read(ref n.BytesWritten)));
            }
        }
        return new(InitiatorName, TargetName, peer, VolumeNames, Since, Parameters?.HeaderDigest ?? false, Parameters?.DataDigest ?? false, Discovery) { Luns = luns };
    }

    /// <summary>Ends the I_T nexuses: SPC-2 reservations and PREVENT state go (SPC-4 §6.13: I_T nexus loss).</summary>
    public void Detach()
    {
        foreach (var n in Luns)
        {
            if (n != null)
            {
                n.Lu.Reservations.ReleaseLegacy(this);
                n.Lu.Detach(n);
            }
        }
    }
}
