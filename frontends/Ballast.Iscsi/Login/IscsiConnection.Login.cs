using System.Buffers.Binary;
using System.Text;
using Ballast.Iscsi.Chap;
using Ballast.Iscsi.Login;
using Ballast.Iscsi.Naming;
using Ballast.Iscsi.Negotiation;
using Ballast.Iscsi.Pdu;
using Ballast.Iscsi.Scsi;
using Ballast.Iscsi.Session;
using Microsoft.Extensions.Logging;

namespace Ballast.Iscsi.Transport;

/// <summary>
/// The login phase (RFC 7143 §6): security negotiation (None or CHAP), operational negotiation,
/// and the move to full feature phase. Every rule broken gets the login status the RFC names and
/// the connection is closed after the response.
/// </summary>
internal sealed partial class IscsiConnection
{
    private sealed class LoginState
    {
        public bool First = true;
        public LoginStage Stage;
        public byte[] Isid = new byte[6];
        public ushort Tsih;
        public ushort Cid;
        public uint Itt;
        public uint CmdSn;
        public List<byte> Text = [];
        public string? InitiatorName;
        public bool Discovery;
        public ResolvedTarget? Target;
        public ChapSecret? RequiredChap;
        public bool Authenticated;
        public bool AuthMethodChosen;
        public ChapAuthenticator? Chap;
        public Negotiator? Negotiator;
        public bool SentPortalGroupTag;
        public readonly HashSet<string> Declared = new(StringComparer.Ordinal);
    }

    private sealed class LoginFailure(LoginStatus status, string reason) : Exception(reason)
    {
        public LoginStatus Status { get; } = status;
    }

    /// <summary>True when the connection reached full feature phase.</summary>
    private async Task<bool> LoginPhaseAsync(CancellationToken ct)
    {
        var s = new LoginState();
        var data = new byte[LoginMaxDataSegment + 4];
        while (true)
        {
            await ReadHeaderAsync(ct).ConfigureAwait(false);
            var op = Bhs.GetOpcode(_bhs);
            var length = Bhs.DataSegmentLength(_bhs);
            if (op != Opcode.LoginRequest)
            {
                // Anything but a Login Request during login (RFC 7143 §6.1): refused, connection closed.
                await FailLoginAsync(s, LoginStatus.InvalidDuringLogin, $"{op} PDU during login").ConfigureAwait(false);
                return false;
            }
            if (length > LoginMaxDataSegment)
            {
                await FailLoginAsync(s, LoginStatus.InitiatorError, $"login data segment of {length} bytes (at most {LoginMaxDataSegment})").ConfigureAwait(false);
                return false;
            }
            await ReadDataAsync(data, length, ct).ConfigureAwait(false);
            try
            {
                if (await OnLoginRequestAsync(s, data.AsSpan(0, length).ToArray()).ConfigureAwait(false))
                {
                    return true;
                }
            }
            catch (LoginFailure f)
            {
                await FailLoginAsync(s, f.Status, f.Message).ConfigureAwait(false);
                return false;
            }
        }
    }

    private async Task FailLoginAsync(LoginState s, LoginStatus status, string reason)
    {
        var level = status == LoginStatus.AuthenticationFailure ? LogLevel.Warning : LogLevel.Information;
        _log.Log(level, "iSCSI login refused: {Initiator} from {Peer} to {Target}: {Status} ({Reason})",
            s.InitiatorName ?? "-", Peer, s.Target?.TargetName ?? "-", status, reason);
        var pdu = LoginResponse(s, transit: false, nsg: 0, []);
        pdu.Header[Bhs.StatusClassByte] = (byte)((ushort)status >> 8);
        pdu.Header[Bhs.StatusDetailByte] = (byte)status;
        pdu.Header[Bhs.FlagsByte] = 0;
        pdu.CloseAfter = true;
        pdu.Sent = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        if (Send(pdu))
        {
            await Task.WhenAny(pdu.Sent.Task, Task.Delay(TimeSpan.FromSeconds(5))).ConfigureAwait(false);
        }
    }

    private ControlPdu LoginResponse(LoginState s, bool transit, LoginStage nsg, List<byte> text)
    {
        var pdu = new ControlPdu { Sequence = StatSnUse.None };
        var h = pdu.Header;
        Bhs.Init(h, Opcode.LoginResponse, (byte)((transit ? Bhs.TransitBit : 0) | ((byte)s.Stage << 2) | (transit ? (byte)nsg : 0)), text.Count);
        h[Bhs.VersionMaxByte] = 0;
        h[Bhs.VersionMinByte] = 0; // VersionActive
        s.Isid.CopyTo(h, Bhs.IsidOffset);
        Bhs.SetU32(h, Bhs.InitiatorTaskTagOffset, s.Itt);
        // Login responses advance StatSN like any response (RFC 7143 §11.13.3).
        Bhs.SetU32(h, Bhs.StatSnOffset, _statSn++);
        Bhs.SetU32(h, Bhs.ExpCmdSnOffset, s.CmdSn);
        Bhs.SetU32(h, Bhs.MaxCmdSnOffset, s.CmdSn + (uint)_target.Options.CommandWindow - 1);
        if (text.Count > 0)
        {
            pdu.Data = [.. text];
            pdu.DataLength = text.Count;
        }
        return pdu;
    }

    /// <summary>Handles one Login Request; true when full feature phase starts.</summary>
    private async Task<bool> OnLoginRequestAsync(LoginState s, byte[] data)
    {
        var h = _bhs;
        var flags = h[Bhs.FlagsByte];
        var transit = (flags & Bhs.TransitBit) != 0;
        var cont = (flags & Bhs.ContinueBit) != 0;
        var csg = (flags >> 2) & 0x03;
        var nsg = flags & 0x03;
        var isid = h.AsSpan(Bhs.IsidOffset, 6);
        var tsih = Bhs.U16(h, Bhs.TsihOffset);
        var cid = Bhs.U16(h, Bhs.CidOffset);
        var itt = Bhs.Itt(h);
        if (s.First)
        {
            isid.CopyTo(s.Isid);
            s.Tsih = tsih;
            s.Cid = cid;
            s.Itt = itt;
            s.CmdSn = Bhs.U32(h, Bhs.CmdSnOffset);
            _statSn = Bhs.U32(h, Bhs.ExpStatSnOffset);
            s.Stage = (LoginStage)csg;
            if (h[Bhs.VersionMinByte] > 0)
            {
                throw new LoginFailure(LoginStatus.UnsupportedVersion, $"VersionMin {h[Bhs.VersionMinByte]} (only 0 is supported)");
            }
            if (tsih != 0)
            {
                // Adding a connection to a session (MC/S) or reinstating one by TSIH is not supported: MaxConnections is 1.
                throw new LoginFailure(LoginStatus.SessionDoesNotExist, $"login with TSIH {tsih}: multiple connections per session are not supported");
            }
        }
        else if (!isid.SequenceEqual(s.Isid) || tsih != s.Tsih || cid != s.Cid || itt != s.Itt)
        {
            throw new LoginFailure(LoginStatus.InitiatorError, "ISID, TSIH, CID or ITT changed during login");
        }
        s.CmdSn = Bhs.U32(h, Bhs.CmdSnOffset);
        if (csg == 2 || csg == 3 || (!s.First && csg != (int)s.Stage) || (s.First && csg > 1))
        {
            throw new LoginFailure(LoginStatus.InitiatorError, $"login request in stage {csg} while the login is in stage {(int)s.Stage}");
        }
        if (transit && (nsg == 2 || nsg <= csg))
        {
            throw new LoginFailure(LoginStatus.InitiatorError, $"invalid stage transition {csg} -> {nsg}");
        }
        if (transit && cont)
        {
            throw new LoginFailure(LoginStatus.InitiatorError, "T and C set together");
        }
        s.Text.AddRange(data);
        if (s.Text.Count > MaxLoginText)
        {
            throw new LoginFailure(LoginStatus.InitiatorError, "login text longer than 64 KiB");
        }
        if (cont)
        {
            // More text follows (C bit): acknowledge with an empty response (RFC 7143 §11.12.2).
            s.First = false;
            Send(LoginResponse(s, false, 0, []));
            return false;
        }
        var pairs = new List<KeyValuePair<string, string>>();
        if (!TextKeys.TryParse([.. s.Text], pairs, out var error))
        {
            throw new LoginFailure(LoginStatus.InitiatorError, error!);
        }
        s.Text.Clear();
        var response = new List<byte>();
        void Respond(string k, string v) => TextKeys.Append(response, k, v);

        if (s.First)
        {
            FirstRequest(s, pairs, Respond);
        }
        s.First = false;

        if (s.Stage == LoginStage.SecurityNegotiation)
        {
            Security(s, pairs, Respond);
        }
        else
        {
            if (s.RequiredChap != null && !s.Authenticated)
            {
                // The initiator skipped security negotiation but this target requires CHAP.
                throw new LoginFailure(LoginStatus.AuthenticationFailure, "CHAP is required but the initiator skipped security negotiation");
            }
            s.Authenticated = true;
            Operational(s, pairs, Respond);
        }

        // Decide whether we transit (RFC 7143 §6.3: the target may only transit when the initiator asks and it is ready).
        var agree = transit && (s.Stage != LoginStage.SecurityNegotiation || s.Authenticated);
        if (agree && (LoginStage)nsg == LoginStage.FullFeaturePhase)
        {
            s.Negotiator!.Finish();
            return await EnterFullFeatureAsync(s, response).ConfigureAwait(false);
        }
        var reply = LoginResponse(s, agree, (LoginStage)nsg, response);
        if (agree)
        {
            s.Stage = (LoginStage)nsg;
        }
        Send(reply);
        return false;
    }

    private void FirstRequest(LoginState s, List<KeyValuePair<string, string>> pairs, Action<string, string> respond)
    {
        string? targetName = null;
        string sessionType = "Normal";
        foreach (var (k, v) in pairs)
        {
            switch (k)
            {
                case "InitiatorName":
                    s.InitiatorName = v;
                    break;
                case "TargetName":
                    targetName = v;
                    break;
                case "SessionType":
                    sessionType = v;
                    break;
            }
        }
        InitiatorName = s.InitiatorName;
        if (string.IsNullOrEmpty(s.InitiatorName) || s.InitiatorName.Length > 223)
        {
            throw new LoginFailure(LoginStatus.MissingParameter, "InitiatorName missing (or longer than 223 bytes)");
        }
        if (sessionType is not ("Normal" or "Discovery"))
        {
            throw new LoginFailure(LoginStatus.SessionTypeNotSupported, $"SessionType={sessionType}");
        }
        s.Discovery = sessionType == "Discovery";
        s.Negotiator = new Negotiator(_target.Options, s.Discovery);
        if (!s.Discovery)
        {
            if (string.IsNullOrEmpty(targetName))
            {
                throw new LoginFailure(LoginStatus.MissingParameter, "TargetName missing in a Normal session");
            }
            var t = _target.Resolver.Resolve(targetName);
            if (t.Outcome == ResolveOutcome.Ambiguous)
            {
                _log.LogWarning("iSCSI login to {Target} refused: {Conflict}; rename one of them", targetName, t.Conflict);
                throw new LoginFailure(LoginStatus.NotFound, t.Conflict!);
            }
            if (t.Outcome == ResolveOutcome.NotFound)
            {
                throw new LoginFailure(LoginStatus.NotFound, $"no target {targetName}");
            }
            s.Target = t;
            respond("TargetPortalGroupTag", "1");
            s.SentPortalGroupTag = true;
        }
        s.RequiredChap = _target.ChapFor(s.Target);
        if (s.Stage == LoginStage.LoginOperationalNegotiation && s.RequiredChap != null)
        {
            throw new LoginFailure(LoginStatus.AuthenticationFailure, "CHAP is required but the initiator skipped security negotiation");
        }
    }

    /// <summary>Declarative keys of the first request may not come again; others go to the stage handlers.</summary>
    private static bool Declarative(LoginState s, string key)
    {
        if (key is "InitiatorName" or "TargetName" or "SessionType")
        {
            if (!s.Declared.Add(key))
            {
                throw new LoginFailure(LoginStatus.InitiatorError, $"{key} declared twice");
            }
            return true;
        }
        return false;
    }

    private void Security(LoginState s, List<KeyValuePair<string, string>> pairs, Action<string, string> respond)
    {
        string? chapN = null, chapR = null, chapI = null, chapC = null;
        var sawChapResponse = false;
        foreach (var (k, v) in pairs)
        {
            if (Declarative(s, k))
            {
                continue;
            }
            switch (k)
            {
                case "AuthMethod":
                    if (s.AuthMethodChosen)
                    {
                        throw new LoginFailure(LoginStatus.InitiatorError, "AuthMethod offered twice");
                    }
                    s.AuthMethodChosen = true;
                    var offered = v.Split(',');
                    if (s.RequiredChap != null)
                    {
                        if (Array.IndexOf(offered, "CHAP") < 0)
                        {
                            respond(k, TextKeys.Reject);
                            throw new LoginFailure(LoginStatus.AuthenticationFailure, $"CHAP is required; the initiator offered AuthMethod={v}");
                        }
                        respond(k, "CHAP");
                        s.Chap = new ChapAuthenticator(s.RequiredChap, _target.Options.MutualChap);
                    }
                    else if (Array.IndexOf(offered, "None") >= 0)
                    {
                        respond(k, "None");
                        s.Authenticated = true;
                    }
                    else
                    {
                        respond(k, TextKeys.Reject);
                        throw new LoginFailure(LoginStatus.AuthenticationFailure, $"the initiator offered AuthMethod={v} but no CHAP secret is configured for this target");
                    }
                    break;
                case "CHAP_A":
                    if (s.Chap is null || s.Chap.State != ChapAuthenticator.Step.Algorithm)
                    {
                        throw new LoginFailure(LoginStatus.InitiatorError, "CHAP_A out of order");
                    }
                    if (!s.Chap.OnAlgorithm(v, respond, out var e))
                    {
                        throw new LoginFailure(LoginStatus.AuthenticationFailure, e!);
                    }
                    break;
                case "CHAP_N":
                    chapN = v;
                    sawChapResponse = true;
                    break;
                case "CHAP_R":
                    chapR = v;
                    sawChapResponse = true;
                    break;
                case "CHAP_I":
                    chapI = v;
                    sawChapResponse = true;
                    break;
                case "CHAP_C":
                    chapC = v;
                    sawChapResponse = true;
                    break;
                default:
                    if (!s.Negotiator!.Process(k, v, respond))
                    {
                        throw new LoginFailure(LoginStatus.InitiatorError, s.Negotiator.Error!);
                    }
                    break;
            }
        }
        if (sawChapResponse)
        {
            if (s.Chap is null || s.Chap.State != ChapAuthenticator.Step.Response)
            {
                throw new LoginFailure(LoginStatus.InitiatorError, "CHAP response before the challenge");
            }
            if (!s.Chap.OnResponse(chapN, chapR, chapI, chapC, respond, out var e))
            {
                throw new LoginFailure(LoginStatus.AuthenticationFailure, e!);
            }
            s.Authenticated = true;
        }
        if (!s.AuthMethodChosen && s.RequiredChap == null)
        {
            // No AuthMethod offered: nothing to authenticate (RFC 7143 §6.3.2 default None).
            s.Authenticated = true;
        }
    }

    private void Operational(LoginState s, List<KeyValuePair<string, string>> pairs, Action<string, string> respond)
    {
        foreach (var (k, v) in pairs)
        {
            if (Declarative(s, k))
            {
                continue;
            }
            if (k.StartsWith("CHAP_", StringComparison.Ordinal) || k == "AuthMethod")
            {
                // Security keys belong to the security stage (RFC 7143 §6.3.1).
                throw new LoginFailure(LoginStatus.InitiatorError, $"{k} in operational negotiation");
            }
            if (!s.Negotiator!.Process(k, v, respond))
            {
                throw new LoginFailure(LoginStatus.InitiatorError, s.Negotiator.Error!);
            }
        }
        s.Negotiator!.DeclareMaxRecv(respond);
    }

    private Task<bool> EnterFullFeatureAsync(LoginState s, List<byte> response)
    {
        if (!s.Authenticated)
        {
            throw new LoginFailure(LoginStatus.AuthenticationFailure, "authentication did not complete");
        }
        var options = _target.Options;
        string targetName;
        LunNexus?[] luns = [];
        var volumeNames = new List<string>();
        var session = new IscsiSession(_target.NewTsih(), s.InitiatorName!, s.Isid, s.Target?.TargetName ?? "", s.Discovery, s.CmdSn, options.CommandWindow);
        if (!s.Discovery)
        {
            targetName = s.Target!.TargetName;
            luns = new LunNexus?[s.Target.LunVolumes.Count];
            for (var i = 0; i < luns.Length; i++)
            {
                var name = s.Target.LunVolumes[i];
                var volume = name is null ? null : _target.Volumes.Find(name);
                if (volume is null)
                {
                    continue;
                }
                var lu = _target.Units.Get(volume);
                var nexus = new LunNexus(lu, i, session.InitiatorPort, session.TargetPort, session);
                lu.Attach(nexus);
                luns[i] = nexus;
                volumeNames.Add(volume.Name);
            }
            if (volumeNames.Count == 0)
            {
                throw new LoginFailure(LoginStatus.TargetRemoved, $"target {targetName}: none of its volumes exists in this pool");
            }
        }
        session.Luns = luns;
        session.VolumeNames = volumeNames;
        session.Parameters = s.Negotiator!.Parameters;
        session.Connection = this;
        Params = s.Negotiator.Parameters;
        var old = _target.AddSession(session);
        if (old != null)
        {
            // Session reinstatement (RFC 7143 §6.3.5): the old session of this initiator port ends.
            _log.LogInformation("iSCSI session of {Initiator} to {Target} reinstated; closing the old one", session.InitiatorName, session.TargetName);
            old.Detach();
            _ = old.Connection?.CloseAsync();
        }
        var reply = LoginResponse(s, true, LoginStage.FullFeaturePhase, response);
        BinaryPrimitives.WriteUInt16BigEndian(reply.Header.AsSpan(Bhs.TsihOffset), session.Tsih);
        Bhs.SetU32(reply.Header, Bhs.MaxCmdSnOffset, session.MaxCmdSn);
        reply.StartFullFeature = true;
        Session = session;
        FullFeature = true;
        Send(reply);
        if (!s.Discovery)
        {
            _log.LogInformation("iSCSI login: {Initiator} from {Peer} to {Target} (volumes {Volumes}; digests header {HeaderDigest} data {DataDigest}{Chap})",
                session.InitiatorName, Peer, session.TargetName, string.Join(",", volumeNames),
                Params.HeaderDigest ? "CRC32C" : "None", Params.DataDigest ? "CRC32C" : "None", s.Chap != null ? ", CHAP" : "");
        }
        else
        {
            _log.LogDebug("iSCSI discovery session from {Initiator} at {Peer}", session.InitiatorName, Peer);
        }
        return Task.FromResult(true);
    }

    internal static string Utf8(ReadOnlySpan<byte> b) => Encoding.UTF8.GetString(b);
}
