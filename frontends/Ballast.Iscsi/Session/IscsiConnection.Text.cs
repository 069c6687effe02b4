using System.Net;
using System.Net.Sockets;
using Ballast.Iscsi.Negotiation;
using Ballast.Iscsi.Pdu;
using Ballast.Iscsi.Scsi;
using Microsoft.Extensions.Logging;

namespace Ballast.Iscsi.Transport;

/// <summary>Text requests (RFC 7143 §11.10, SendTargets §13.3 and Appendix C) and logout (§11.14).</summary>
internal sealed partial class IscsiConnection
{
    private const int MaxTextRequest = 64 * 1024;
    private readonly List<byte> _textIn = [];
    private byte[]? _textOut;
    private int _textOutOffset;
    private uint _textTtt = Bhs.ReservedTag;

    private async ValueTask OnTextAsync(int length, CancellationToken ct)
    {
        var h = (byte[])_bhs.Clone();
        var itt = Bhs.Itt(h);
        var ttt = Bhs.U32(h, Bhs.TargetTransferTagOffset);
        var final = Bhs.IsFinal(h);
        var cont = (h[Bhs.FlagsByte] & Bhs.ContinueBit) != 0;
        if (_textIn.Count + length > MaxTextRequest)
        {
            await SkipDataAsync(length, ct).ConfigureAwait(false);
            _textIn.Clear();
            RejectCurrent(RejectReason.InvalidPduField);
            return;
        }
        var data = new byte[length];
        await ReadDataAsync(data, length, ct).ConfigureAwait(false);
        if (!_dataOk)
        {
            RejectCurrent(RejectReason.DataDigestError);
            return;
        }
        if (!Bhs.IsImmediate(h))
        {
            if (!AcceptCmdSn(false, Bhs.U32(h, Bhs.CmdSnOffset)))
            {
                return;
            }
            Session!.Retire();
        }
        if (ttt != Bhs.ReservedTag)
        {
            if (ttt != _textTtt || _textOut is null)
            {
                RejectCurrent(RejectReason.InvalidPduField);
                return;
            }
            SendTextChunk(itt, h);
            return;
        }
        _textIn.AddRange(data);
        if (cont || !final && _textIn.Count == 0)
        {
            SendText(itt, h, [], final: false, ttt: NextTtt());
            return;
        }
        var pairs = new List<KeyValuePair<string, string>>();
        var ok = TextKeys.TryParse([.. _textIn], pairs, out var error);
        _textIn.Clear();
        if (!ok)
        {
            _log.LogInformation("iSCSI {Initiator}: bad text request: {Error}", InitiatorName, error);
            RejectCurrent(RejectReason.InvalidPduField);
            return;
        }
        var response = new List<byte>();
        foreach (var (k, v) in pairs)
        {
            if (k == "SendTargets")
            {
                SendTargets(v, response);
            }
            else
            {
                TextKeys.Append(response, k, TextKeys.NotUnderstood);
            }
        }
        _textOut = [.. response];
        _textOutOffset = 0;
        SendTextChunk(itt, h);
    }

    /// <summary>Sends the next piece of a long response; pieces after the first are asked for with our TTT (C bit, RFC 7143 §11.11.2).</summary>
    private void SendTextChunk(uint itt, byte[] request)
    {
        var rest = _textOut!.Length - _textOutOffset;
        var n = Math.Min(rest, Params.InitiatorMaxRecvDataSegmentLength);
        var chunk = _textOut.AsSpan(_textOutOffset, n).ToArray();
        _textOutOffset += n;
        var done = _textOutOffset == _textOut.Length;
        if (done)
        {
            _textOut = null;
            _textTtt = Bhs.ReservedTag;
        }
        else
        {
            _textTtt = NextTtt();
        }
        SendText(itt, request, chunk, done, done ? Bhs.ReservedTag : _textTtt);
    }

    private void SendText(uint itt, byte[] request, byte[] data, bool final, uint ttt)
    {
        var pdu = new ControlPdu { Data = data, DataLength = data.Length };
        Bhs.Init(pdu.Header, Opcode.TextResponse, (byte)(final ? Bhs.FinalBit : Bhs.ContinueBit), data.Length);
        Bhs.SetU64(pdu.Header, Bhs.LunOffset, Bhs.Lun(request));
        Bhs.SetU32(pdu.Header, Bhs.InitiatorTaskTagOffset, itt);
        Bhs.SetU32(pdu.Header, Bhs.TargetTransferTagOffset, ttt);
        Send(pdu);
    }

    /// <summary>
    /// SendTargets (RFC 7143 §13.3): in a discovery session "All" lists every target; in a normal
    /// session only the session's own target is reported. Each target comes with every portal.
    /// </summary>
    private void SendTargets(string value, List<byte> response)
    {
        var session = Session!;
        List<string> names;
        if (session.Discovery && value == "All")
        {
            names = _target.Resolver.ListTargets();
        }
        else if (!session.Discovery && (value.Length == 0 || value == "All"))
        {
            names = [session.TargetName];
        }
        else if (value.Length > 0 && value != "All")
        {
            var t = _target.Resolver.Resolve(value);
            names = t.Outcome == Naming.ResolveOutcome.Found && (session.Discovery || t.TargetName == session.TargetName) ? [t.TargetName] : [];
        }
        else
        {
            names = [];
        }
        foreach (var name in names)
        {
            TextKeys.Append(response, "TargetName", name);
            foreach (var portal in PortalAddresses())
            {
                TextKeys.Append(response, "TargetAddress", portal + ",1");
            }
        }
    }

    /// <summary>The bound portals; a wildcard address is replaced by the address this connection came in on.</summary>
    private List<string> PortalAddresses()
    {
        var list = new List<string>();
        var local = Local as IPEndPoint;
        foreach (var p in _target.Portals)
        {
            var ip = p.Address.Equals(IPAddress.Any) || p.Address.Equals(IPAddress.IPv6Any) ? local?.Address ?? p.Address : p.Address;
            if (ip.IsIPv4MappedToIPv6)
            {
                ip = ip.MapToIPv4();
            }
            var text = ip.AddressFamily == AddressFamily.InterNetworkV6 ? $"[{ip}]:{p.Port}" : $"{ip}:{p.Port}";
            if (!list.Contains(text))
            {
                list.Add(text);
            }
        }
        return list;
    }

    /// <summary>Logout (RFC 7143 §11.14): waits for running commands, answers, closes. True: the connection ends.</summary>
    private async Task<bool> OnLogoutAsync()
    {
        var h = (byte[])_bhs.Clone();
        var reason = h[Bhs.FlagsByte] & 0x7f;
        var itt = Bhs.Itt(h);
        if (!Bhs.IsImmediate(h))
        {
            if (!AcceptCmdSn(false, Bhs.U32(h, Bhs.CmdSnOffset)))
            {
                return false;
            }
            Session!.Retire();
        }
        byte response = reason switch
        {
            0 or 1 => 0, // closed successfully (one connection per session, so both close the session)
            2 => 2, // connection recovery is not supported (ErrorRecoveryLevel 0)
            _ => 3,
        };
        if (response == 0)
        {
            List<ScsiTask> running;
            lock (_tasks)
            {
                running = [.. _tasks.Values];
            }
            var waits = new List<Task>();
            foreach (var t in running)
            {
                waits.Add(t.WhenNotExecutingAsync());
            }
            await Task.WhenAny(Task.WhenAll(waits), Task.Delay(TimeSpan.FromSeconds(30))).ConfigureAwait(false);
        }
        var pdu = new ControlPdu { CloseAfter = response == 0 };
        Bhs.Init(pdu.Header, Opcode.LogoutResponse, Bhs.FinalBit, 0);
        pdu.Header[Bhs.ResponseByte] = response;
        Bhs.SetU32(pdu.Header, Bhs.InitiatorTaskTagOffset, itt);
        Send(pdu);
        return response == 0;
    }
}
