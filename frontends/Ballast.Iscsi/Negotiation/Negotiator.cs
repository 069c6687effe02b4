using System.Globalization;

namespace Ballast.Iscsi.Negotiation;

/// <summary>
/// Operational parameter negotiation (RFC 7143 §6.2, §13): one rule per key. Each offer gets an
/// answer in the response; declarative keys are only recorded. Unknown keys are answered
/// NotUnderstood, keys that do not apply to the session type Irrelevant, bad values Reject; a key
/// offered twice in one login fails the login (§6.2: "Login reject (initiator error)").
/// </summary>
internal sealed class Negotiator
{
    private const int MaxValueLength = 255;
    private readonly IscsiTargetOptions _options;
    private readonly HashSet<string> _seen = new(StringComparer.Ordinal);
    private bool _declaredMaxRecv;

    public Negotiator(IscsiTargetOptions options, bool discovery)
    {
        _options = options;
        Discovery = discovery;
        Parameters.TargetMaxRecvDataSegmentLength = options.MaxRecvDataSegmentLength;
    }

    public OperationalParameters Parameters { get; } = new();

    public bool Discovery { get; set; }

    /// <summary>The reason the last <see cref="Process"/> failed.</summary>
    public string? Error { get; private set; }

    /// <summary>Answers one offered key. False: the login must fail with an initiator error (<see cref="Error"/>).</summary>
    public bool Process(string key, string value, Action<string, string> respond)
    {
        if (!_seen.Add(key))
        {
            Error = $"key {key} was offered twice";
            return false;
        }
        if (value.Length > MaxValueLength && key != "TargetAddress")
        {
            Error = $"the value of {key} is longer than {MaxValueLength} bytes";
            return false;
        }
        var p = Parameters;
        switch (key)
        {
            case "HeaderDigest":
                respond(key, Digests(value, out var h));
                p.HeaderDigest = h;
                return true;
            case "DataDigest":
                respond(key, Digests(value, out var d));
                p.DataDigest = d;
                return true;
            case "MaxRecvDataSegmentLength":
                // Declarative (§13.12): what the initiator can receive. 512..2^24-1.
                if (!Number(value, 512, (1 << 24) - 1, out var mrdsl))
                {
                    respond(key, TextKeys.Reject);
                    return true;
                }
                p.InitiatorMaxRecvDataSegmentLength = (int)mrdsl;
                DeclareMaxRecv(respond);
                return true;
            case "MaxConnections":
                // Minimum (§13.2); one connection per session (no MC/S).
                return Minimum(key, value, 1, 65535, 1, v => p.MaxConnections = v, respond);
            case "InitialR2T":
                // OR (§13.10): we do not need R2T before the first data, so the initiator decides.
                return Boolean(key, value, b => p.InitialR2T = b, respond, or: true, mine: false);
            case "ImmediateData":
                // AND (§13.11): we accept immediate data.
                return Boolean(key, value, b => p.ImmediateData = b, respond, or: false, mine: true);
            case "MaxBurstLength":
                return Minimum(key, value, 512, (1 << 24) - 1, _options.MaxBurstLength, v => p.MaxBurstLength = v, respond);
            case "FirstBurstLength":
                return Minimum(key, value, 512, (1 << 24) - 1, _options.FirstBurstLength, v => p.FirstBurstLength = v, respond);
            case "MaxOutstandingR2T":
                return Minimum(key, value, 1, 65535, 16, v => p.MaxOutstandingR2T = v, respond);
            case "DataPDUInOrder":
                // OR (§13.18): we want Data PDUs in order (DataSN checks), so the result is Yes.
                return Boolean(key, value, b => p.DataPduInOrder = b, respond, or: true, mine: true);
            case "DataSequenceInOrder":
                return Boolean(key, value, b => p.DataSequenceInOrder = b, respond, or: true, mine: true);
            case "ErrorRecoveryLevel":
                // Minimum (§13.20): level 0 only (session recovery).
                return Minimum(key, value, 0, 2, 0, v => p.ErrorRecoveryLevel = v, respond, irrelevantInDiscovery: false);
            case "DefaultTime2Wait":
                // Maximum (§13.15).
                if (!Number(value, 0, 3600, out var wait))
                {
                    respond(key, TextKeys.Reject);
                    return true;
                }
                p.DefaultTime2Wait = (int)Math.Max(wait, 2);
                respond(key, p.DefaultTime2Wait.ToString(CultureInfo.InvariantCulture));
                return true;
            case "DefaultTime2Retain":
                return Minimum(key, value, 0, 3600, 0, v => p.DefaultTime2Retain = v, respond, irrelevantInDiscovery: false);
            case "IFMarker":
            case "OFMarker":
                // Markers were removed by RFC 7143 (§13.25 lists them as obsolete); an RFC 3720 initiator
                // may still offer them: the AND result with our "No" is No.
                if (value is not ("Yes" or "No"))
                {
                    respond(key, TextKeys.Reject);
                    return true;
                }
                respond(key, "No");
                return true;
            case "IFMarkInt":
            case "OFMarkInt":
                respond(key, TextKeys.Irrelevant);
                return true;
            case "TaskReporting":
                // §13.23: a list; we do the RFC 3720 behaviour (no response fence, no fast abort).
                respond(key, Contains(value, "RFC3720") ? "RFC3720" : TextKeys.Reject);
                return true;
            case "iSCSIProtocolLevel":
                // RFC 7144 §2.1: minimum; 1 is RFC 7143.
                return Minimum(key, value, 0, 31, 1, _ => { }, respond, irrelevantInDiscovery: false);
            case "InitiatorAlias":
                return true; // declarative, informational
            case "TargetAlias":
            case "TargetAddress":
            case "TargetPortalGroupTag":
                // Only the target declares these (§13.6, §13.8, §13.9).
                Error = $"the initiator may not send {key}";
                return false;
            default:
                respond(key, TextKeys.NotUnderstood);
                return true;
        }
    }

    /// <summary>Declares our MaxRecvDataSegmentLength once per connection (§13.12: each side declares its own).</summary>
    public void DeclareMaxRecv(Action<string, string> respond)
    {
        if (_declaredMaxRecv)
        {
            return;
        }
        _declaredMaxRecv = true;
        respond("MaxRecvDataSegmentLength", Parameters.TargetMaxRecvDataSegmentLength.ToString(CultureInfo.InvariantCulture));
    }

    /// <summary>Applies cross-key rules once negotiation ends: FirstBurstLength never exceeds MaxBurstLength (§13.14).</summary>
    public void Finish()
    {
        var p = Parameters;
        if (p.FirstBurstLength > p.MaxBurstLength)
        {
            p.FirstBurstLength = p.MaxBurstLength;
        }
    }

    private string Digests(string offer, out bool crc)
    {
        crc = false;
        foreach (var v in offer.Split(','))
        {
            if (v == "None")
            {
                return "None";
            }
            if (v == "CRC32C" && _options.AllowDigests)
            {
                crc = true;
                return "CRC32C";
            }
        }
        return TextKeys.Reject;
    }

    private bool Minimum(string key, string value, long min, long max, int mine, Action<int> set, Action<string, string> respond, bool irrelevantInDiscovery = true)
    {
        if (Discovery && irrelevantInDiscovery)
        {
            respond(key, TextKeys.Irrelevant);
            return true;
        }
        if (!Number(value, min, max, out var offered))
        {
            respond(key, TextKeys.Reject);
            return true;
        }
        var result = (int)Math.Min(offered, mine);
        set(result);
        respond(key, result.ToString(CultureInfo.InvariantCulture));
        return true;
    }

    private bool Boolean(string key, string value, Action<bool> set, Action<string, string> respond, bool or, bool mine)
    {
        if (Discovery)
        {
            respond(key, TextKeys.Irrelevant);
            return true;
        }
        bool offered;
        if (value == "Yes")
        {
            offered = true;
        }
        else if (value == "No")
        {
            offered = false;
        }
        else
        {
            respond(key, TextKeys.Reject);
            return true;
        }
        var result = or ? offered || mine : offered && mine;
        set(result);
        respond(key, result ? "Yes" : "No");
        return true;
    }

    /// <summary>A numerical value (§6.1): decimal, or hex with 0x; no sign, no blanks.</summary>
    internal static bool Number(string value, long min, long max, out long result)
    {
        result = 0;
        if (value.Length == 0 || value.Length > 20)
        {
            return false;
        }
        bool ok;
        if (value.StartsWith("0x", StringComparison.OrdinalIgnoreCase))
        {
            ok = long.TryParse(value.AsSpan(2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out result);
        }
        else
        {
            ok = long.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out result);
        }
        return ok && result >= min && result <= max;
    }

    private static bool Contains(string list, string item)
    {
        foreach (var v in list.Split(','))
        {
            if (v == item)
            {
                return true;
            }
        }
        return false;
    }
}
