using System.Runtime.CompilerServices;
using Ballast.Iscsi.Pdu;
using Ballast.Iscsi.Scsi;
using Microsoft.Extensions.Logging;

namespace Ballast.Iscsi.Transport;

/// <summary>
/// The full feature phase receive side (RFC 7143 §11): SCSI commands with immediate and
/// unsolicited data, Data-Out against R2T bursts, NOP-Out, task management, text, logout.
/// Every field is validated before it is used; a broken rule that loses the PDU stream closes
/// the connection, anything else gets a Reject and the connection goes on.
/// </summary>
internal sealed partial class IscsiConnection
{
    private readonly byte[] _controlData = new byte[16 * 1024];

    private async Task FullFeaturePhaseAsync(CancellationToken ct)
    {
        while (true)
        {
            await ReadHeaderAsync(ct).ConfigureAwait(false);
            var op = Bhs.GetOpcode(_bhs);
            var length = Bhs.DataSegmentLength(_bhs);
            if (length > Params.TargetMaxRecvDataSegmentLength)
            {
                // RFC 7143 §13.12: a PDU larger than we declared. The stream may be out of step: reject and close.
                RejectCurrent(RejectReason.ProtocolError, close: true);
                throw new ProtocolViolationException($"data segment of {length} bytes exceeds MaxRecvDataSegmentLength {Params.TargetMaxRecvDataSegmentLength}");
            }
            switch (op)
            {
                case Opcode.ScsiCommand:
                    await OnScsiCommandAsync(length, ct).ConfigureAwait(false);
                    break;
                case Opcode.DataOut:
                    await OnDataOutAsync(length, ct).ConfigureAwait(false);
                    break;
                case Opcode.NopOut:
                    await OnNopOutAsync(length, ct).ConfigureAwait(false);
                    break;
                case Opcode.TaskManagementRequest:
                    await SkipDataAsync(length, ct).ConfigureAwait(false);
                    OnTaskManagement();
                    break;
                case Opcode.TextRequest:
                    await OnTextAsync(length, ct).ConfigureAwait(false);
                    break;
                case Opcode.LogoutRequest:
                    await SkipDataAsync(length, ct).ConfigureAwait(false);
                    if (await OnLogoutAsync().ConfigureAwait(false))
                    {
                        return;
                    }
                    break;
                case Opcode.LoginRequest:
                    RejectCurrent(RejectReason.ProtocolError, close: true);
                    throw new ProtocolViolationException("Login Request in full feature phase");
                case Opcode.SnackRequest:
                    // ErrorRecoveryLevel 0: no SNACK (RFC 7143 §11.16).
                    await SkipDataAsync(length, ct).ConfigureAwait(false);
                    RejectCurrent(RejectReason.SnackReject);
                    break;
                default:
                    await SkipDataAsync(length, ct).ConfigureAwait(false);
                    RejectCurrent(RejectReason.CommandNotSupported);
                    break;
            }
        }
    }

    /// <summary>Reject PDU (RFC 7143 §11.17) carrying the offending header.</summary>
    private void RejectCurrent(RejectReason reason, bool close = false)
    {
        var pdu = new ControlPdu { Data = (byte[])_bhs.Clone(), DataLength = Bhs.Length, CloseAfter = close };
        Bhs.Init(pdu.Header, Opcode.Reject, Bhs.FinalBit, Bhs.Length);
        pdu.Header[Bhs.ReasonByte] = (byte)reason;
        Bhs.SetU32(pdu.Header, Bhs.InitiatorTaskTagOffset, Bhs.ReservedTag);
        Send(pdu);
    }

    /// <summary>
    /// CmdSN rules for a non-immediate request (RFC 7143 §4.2.2.1): outside [ExpCmdSN, MaxCmdSN]
    /// it is silently ignored; inside it is accepted. A gap (CmdSN above ExpCmdSN) cannot come from
    /// a well-behaved initiator on one connection, so the window simply moves past it.
    /// </summary>
    private bool AcceptCmdSn(bool immediate, uint cmdSn)
    {
        var s = Session!;
        if (immediate)
        {
            return true;
        }
        if (!s.InWindow(cmdSn))
        {
            _log.LogDebug("iSCSI {Initiator}: CmdSN {CmdSn} outside [{Exp}, {Max}], ignored", InitiatorName, cmdSn, s.ExpCmdSn, s.MaxCmdSn);
            return false;
        }
        s.Accept(cmdSn);
        return true;
    }

    [AsyncMethodBuilder(typeof(Ballast.Engine.Async.PooledValueTaskBuilder))]
    private async ValueTask OnScsiCommandAsync(int length, CancellationToken ct)
    {
        var h = _bhs;
        var session = Session!;
        var immediate = Bhs.IsImmediate(h);
        var flags = h[Bhs.FlagsByte];
        var itt = Bhs.Itt(h);
        var edtl = Bhs.U32(h, Bhs.ExpectedDataTransferLengthOffset);
        var cmdSn = Bhs.U32(h, Bhs.CmdSnOffset);
        var write = (flags & Bhs.WriteBit) != 0;
        var read = (flags & Bhs.ReadBit) != 0;
        var final = (flags & Bhs.FinalBit) != 0;
        if (session.Discovery)
        {
            await SkipDataAsync(length, ct).ConfigureAwait(false);
            RejectCurrent(RejectReason.ProtocolError);
            return;
        }
        if (itt == Bhs.ReservedTag)
        {
            await SkipDataAsync(length, ct).ConfigureAwait(false);
            RejectCurrent(RejectReason.InvalidPduField);
            return;
        }
        if (length > 0 && (!write || !Params.ImmediateData || length > edtl || length > Params.FirstBurstLength))
        {
            // Immediate data that was not negotiated, or more than the command will take (RFC 7143 §4.2.5.2).
            RejectCurrent(RejectReason.ProtocolError, close: true);
            throw new ProtocolViolationException($"{length} bytes of immediate data not allowed (EDTL {edtl}, ImmediateData {Params.ImmediateData})");
        }
        if (!final && (!write || Params.InitialR2T))
        {
            RejectCurrent(RejectReason.ProtocolError, close: true);
            throw new ProtocolViolationException("unsolicited Data-Out announced but not allowed (InitialR2T=Yes or not a write)");
        }
        bool duplicate;
        lock (_tasks)
        {
            duplicate = _tasks.ContainsKey(itt);
        }
        if (duplicate)
        {
            RejectCurrent(RejectReason.TaskInProgress, close: true);
            throw new ProtocolViolationException($"ITT 0x{itt:x8} is already in use");
        }
        if (immediate && Volatile.Read(ref _immediateInFlight) >= MaxImmediateCommands)
        {
            await SkipDataAsync(length, ct).ConfigureAwait(false);
            RejectCurrent(RejectReason.ImmediateCommandReject);
            return;
        }
        if (!AcceptCmdSn(immediate, cmdSn))
        {
            await SkipDataAsync(length, ct).ConfigureAwait(false);
            return;
        }
        var t = RentTask();
        t.Connection = this;
        t.Itt = itt;
        t.CmdSn = cmdSn;
        t.Immediate = immediate;
        t.LunField = Bhs.Lun(h);
        t.ReadBit = read;
        t.WriteBit = write;
        t.ExpectedLength = edtl;
        t.SessionLuns = session.Luns;
        h.AsSpan(Bhs.CdbOffset, Bhs.CdbLength).CopyTo(t.Cdb);
        t.CdbLength = Bhs.CdbLength;
        if (_ahsLength > 0)
        {
            CopyExtendedCdb(t);
        }
        var lun = LunAddress.Decode(t.LunField);
        t.Nexus = lun >= 0 && lun < session.Luns.Length ? session.Luns[lun] : null;
        if (immediate)
        {
            Interlocked.Increment(ref _immediateInFlight);
        }
        lock (_tasks)
        {
            _tasks.Add(itt, t);
        }
        if (!write || edtl == 0)
        {
            t.Start();
            return;
        }
        // A write: take its data. Larger than we ever transfer: take nothing and fail it once unsolicited data is drained.
        var tooBig = edtl > (uint)_target.Options.MaxTransferLength + 4096;
        var total = (int)Math.Min(edtl, int.MaxValue);
        if (!tooBig)
        {
            t.EnsureBuffer(total);
        }
        if (length > 0)
        {
            if (tooBig)
            {
                await SkipDataAsync(length, ct).ConfigureAwait(false);
            }
            else
            {
                await ReadDataAsync(t.Buffer, length, ct).ConfigureAwait(false);
                if (!_dataOk)
                {
                    // Payload digest error on immediate data (RFC 7143 §7.8): the command fails once its data is in.
                    RejectCurrent(RejectReason.DataDigestError);
                    t.DataDigestFailed = true;
                }
            }
        }
        t.DataOutLength = length;
        t.UnsolicitedReceived = length;
        t.UnsolicitedEnd = final ? length : Math.Min(total, Params.FirstBurstLength);
        t.UnsolicitedDone = final;
        t.NextR2TOffset = t.UnsolicitedEnd;
        if (tooBig)
        {
            t.Discarding = true;
            t.CheckCondition(SenseKey.IllegalRequest, Asc.InvalidFieldInCdb);
            t.NextR2TOffset = total; // solicit nothing
            if (t.UnsolicitedDone)
            {
                FinishWithoutData(t);
            }
            return;
        }
        if (t.DataOutLength == total)
        {
            // All its data came with the command: alone if nothing else is in flight or arriving.
            lock (_tasks)
            {
                t.Alone = _tasks.Count == 1 && !_reader.HasBuffered;
            }
            if (t.Alone && total > 0)
            {
                // A lone write inside a completion batch is acknowledged before its device write,
                // which the engine runs when the batch ends, after the response has left.
                using (Ballast.Engine.Async.CompletionBatch.Begin())
                {
                    t.Start();
                }
                return;
            }
            t.Start();
            return;
        }
        IssueR2Ts(t);
    }

    /// <summary>A command that failed before its data arrived: respond as soon as no more unsolicited data is owed.</summary>
    private void FinishWithoutData(ScsiTask t)
    {
        t.DataOutLength = 0;
        t.TransferLength = 0;
        OnTaskDone(t);
    }

    /// <summary>Extended CDB AHS (type 1, RFC 7143 §11.2.2.3): CDB bytes 16 and on.</summary>
    private void CopyExtendedCdb(ScsiTask t)
    {
        var o = 0;
        while (o + 3 < _ahsLength)
        {
            var len = (_ahs[o] << 8) | _ahs[o + 1];
            var type = _ahs[o + 2];
            if (type == 1 && len > 1)
            {
                var ext = Math.Min(len - 1, ScsiTask.MaxCdbLength - Bhs.CdbLength);
                _ahs.AsSpan(o + 4, ext).CopyTo(t.Cdb.AsSpan(Bhs.CdbLength));
                t.CdbLength = Bhs.CdbLength + ext;
            }
            o += (3 + len + 3) & ~3;
        }
    }

    /// <summary>Sends R2Ts while fewer than MaxOutstandingR2T are open, each for at most MaxBurstLength (RFC 7143 §11.8).</summary>
    private void IssueR2Ts(ScsiTask t)
    {
        var total = (int)Math.Min(t.ExpectedLength, int.MaxValue);
        var maxOutstanding = Math.Min(Params.MaxOutstandingR2T, ScsiTask.MaxBursts);
        while (t.OutstandingR2T < maxOutstanding && t.NextR2TOffset < total)
        {
            var length = Math.Min(Params.MaxBurstLength, total - t.NextR2TOffset);
            Solicit(t, t.NextR2TOffset, length);
            t.NextR2TOffset += length;
        }
    }

    private void Solicit(ScsiTask t, int offset, int length)
    {
        var slot = -1;
        for (var i = 0; i < t.Bursts.Length; i++)
        {
            if (!t.Bursts[i].Active)
            {
                slot = i;
                break;
            }
        }
        if (slot < 0)
        {
            throw new ProtocolViolationException("too many outstanding R2Ts");
        }
        ref var b = ref t.Bursts[slot];
        b.Active = true;
        b.Ttt = NextTtt();
        b.Offset = offset;
        b.Length = length;
        b.Received = 0;
        b.NextDataSn = 0;
        var r2tSn = t.R2TSn++;
        t.OutstandingR2T++;
        _out.TryWrite(new OutItem(OutKind.ReadyToTransfer, t, null, b.Ttt, r2tSn, b.Offset, b.Length));
    }

    [AsyncMethodBuilder(typeof(Ballast.Engine.Async.PooledValueTaskBuilder))]
    private async ValueTask OnDataOutAsync(int length, CancellationToken ct)
    {
        var h = _bhs;
        var itt = Bhs.Itt(h);
        var ttt = Bhs.U32(h, Bhs.TargetTransferTagOffset);
        var dataSn = Bhs.U32(h, Bhs.DataSnOffset);
        var offset = Bhs.U32(h, Bhs.BufferOffsetOffset);
        var final = Bhs.IsFinal(h);
        ScsiTask? t;
        lock (_tasks)
        {
            _tasks.TryGetValue(itt, out t);
        }
        if (t is null || t.IsExecuting || !t.WriteBit)
        {
            // Data for a task we do not know (or that already has all its data): reject, keep going.
            await SkipDataAsync(length, ct).ConfigureAwait(false);
            RejectCurrent(RejectReason.InvalidPduField);
            return;
        }
        var total = (int)Math.Min(t.ExpectedLength, int.MaxValue);
        if ((long)offset + length > total)
        {
            await FailDataOutAsync(t, length, $"Data-Out at {offset}+{length} beyond EDTL {total}", ct).ConfigureAwait(false);
            return;
        }
        var burstIndex = -1;
        if (ttt == Bhs.ReservedTag)
        {
            // Unsolicited data: in order, inside the first burst (RFC 7143 §4.2.5.2).
            if (t.UnsolicitedDone || offset != t.UnsolicitedReceived || dataSn != t.UnsolicitedDataSn || offset + length > t.UnsolicitedEnd)
            {
                await FailDataOutAsync(t, length, $"unsolicited Data-Out DataSN {dataSn} offset {offset} out of sequence", ct).ConfigureAwait(false);
                return;
            }
        }
        else
        {
            for (var i = 0; i < t.Bursts.Length; i++)
            {
                if (t.Bursts[i].Active && t.Bursts[i].Ttt == ttt)
                {
                    burstIndex = i;
                    break;
                }
            }
            if (burstIndex < 0)
            {
                await SkipDataAsync(length, ct).ConfigureAwait(false);
                RejectCurrent(RejectReason.InvalidPduField);
                return;
            }
            ref var b = ref t.Bursts[burstIndex];
            if (dataSn != b.NextDataSn || offset != b.Offset + b.Received || offset + length > b.Offset + b.Length)
            {
                // DataPDUInOrder=Yes: DataSN counts from 0 per R2T and offsets follow each other (RFC 7143 §11.7.5).
                await FailDataOutAsync(t, length, $"Data-Out DataSN {dataSn} offset {offset} out of sequence (expected DataSN {b.NextDataSn} offset {b.Offset + b.Received})", ct).ConfigureAwait(false);
                return;
            }
        }
        var tooBig = t.Discarding;
        if (tooBig)
        {
            await SkipDataAsync(length, ct).ConfigureAwait(false);
        }
        else
        {
            await ReadDataAsync(t.Buffer.AsMemory((int)offset), length, ct).ConfigureAwait(false);
            if (!_dataOk)
            {
                RejectCurrent(RejectReason.DataDigestError);
                t.DataDigestFailed = true;
            }
        }
        if (burstIndex < 0)
        {
            t.UnsolicitedReceived += length;
            t.UnsolicitedDataSn++;
            if (final)
            {
                t.UnsolicitedDone = true;
                if (t.UnsolicitedReceived < t.UnsolicitedEnd && !t.Discarding)
                {
                    // The unsolicited burst ended early (F before FirstBurstLength): solicit the rest of it.
                    Solicit(t, t.UnsolicitedReceived, t.UnsolicitedEnd - t.UnsolicitedReceived);
                }
            }
        }
        else
        {
            ref var b = ref t.Bursts[burstIndex];
            b.Received += length;
            b.NextDataSn++;
            if (final)
            {
                if (b.Received != b.Length)
                {
                    FailTask(t, $"Data-Out burst ended after {b.Received} of {b.Length} bytes");
                    return;
                }
                b.Active = false;
                t.OutstandingR2T--;
            }
        }
        if (tooBig)
        {
            if (t.UnsolicitedDone && t.OutstandingR2T == 0)
            {
                FinishWithoutData(t);
            }
            return;
        }
        t.DataOutLength += length;
        if (t.DataOutLength == total)
        {
            t.Start();
        }
        else if (final)
        {
            IssueR2Ts(t);
        }
    }

    /// <summary>
    /// A Data-Out out of sequence (RFC 7143 §7.9, ErrorRecoveryLevel 0): the PDU is rejected and the
    /// command ends with CHECK CONDITION (ABORTED COMMAND, DATA PHASE ERROR). The connection goes
    /// on; later Data-Out for the command are rejected as unknown.
    /// </summary>
    private async ValueTask FailDataOutAsync(ScsiTask t, int length, string reason, CancellationToken ct)
    {
        await SkipDataAsync(length, ct).ConfigureAwait(false);
        RejectCurrent(RejectReason.ProtocolError);
        FailTask(t, reason);
    }

    private void FailTask(ScsiTask t, string reason)
    {
        _log.LogInformation("iSCSI {Initiator}: {Reason}; the command fails", InitiatorName, reason);
        t.Discarding = true;
        t.CheckCondition(SenseKey.AbortedCommand, Asc.DataPhaseError);
        t.DataOutLength = 0;
        t.TransferLength = 0;
        OnTaskDone(t);
    }

    private async ValueTask OnNopOutAsync(int length, CancellationToken ct)
    {
        var h = _bhs;
        var itt = Bhs.Itt(h);
        var ttt = Bhs.U32(h, Bhs.TargetTransferTagOffset);
        var immediate = Bhs.IsImmediate(h);
        var cmdSn = Bhs.U32(h, Bhs.CmdSnOffset);
        var lun = Bhs.Lun(h);
        var ping = length > 0 ? new byte[length] : null;
        if (ping != null)
        {
            await ReadDataAsync(ping, length, ct).ConfigureAwait(false);
            if (!_dataOk)
            {
                RejectCurrent(RejectReason.DataDigestError);
                return;
            }
        }
        if (itt == Bhs.ReservedTag)
        {
            // The answer to our NOP-In ping (RFC 7143 §11.18): no response.
            if (ttt != Bhs.ReservedTag && ttt == _pingTtt)
            {
                _pingTtt = 0;
            }
            return;
        }
        if (!immediate)
        {
            if (!AcceptCmdSn(false, cmdSn))
            {
                return;
            }
            Session!.Retire();
        }
        var pdu = new ControlPdu { Data = ping, DataLength = Math.Min(length, Params.InitiatorMaxRecvDataSegmentLength) };
        Bhs.Init(pdu.Header, Opcode.NopIn, Bhs.FinalBit, pdu.DataLength);
        Bhs.SetU64(pdu.Header, Bhs.LunOffset, lun);
        Bhs.SetU32(pdu.Header, Bhs.InitiatorTaskTagOffset, itt);
        Bhs.SetU32(pdu.Header, Bhs.TargetTransferTagOffset, Bhs.ReservedTag);
        Send(pdu);
    }

    // ---- Liveness ----

    private uint _pingTtt;
    private long _pingSentAt;

    /// <summary>Called about once a second: login timeout, NOP-In pings and their timeout.</summary>
    public void Tick(long now)
    {
        var o = _target.Options;
        if (IsClosed)
        {
            return;
        }
        if (!FullFeature)
        {
            if (now - _startedAt > (long)o.LoginTimeout.TotalMilliseconds)
            {
                _log.LogInformation("iSCSI connection from {Peer} did not log in within {Timeout}; closing it", Peer, o.LoginTimeout);
                _ = CloseAsync();
            }
            return;
        }
        if (o.NopInInterval <= TimeSpan.Zero)
        {
            return;
        }
        if (_pingTtt != 0)
        {
            if (LastActivity > _pingSentAt)
            {
                _pingTtt = 0; // traffic came in, the initiator is alive
            }
            else if (now - _pingSentAt > (long)o.NopInTimeout.TotalMilliseconds)
            {
                _log.LogWarning("iSCSI {Initiator} at {Peer} did not answer a NOP-In within {Timeout}; closing the connection", InitiatorName, Peer, o.NopInTimeout);
                _ = CloseAsync();
            }
            return;
        }
        if (now - LastActivity > (long)o.NopInInterval.TotalMilliseconds)
        {
            var ttt = NextTtt();
            var pdu = new ControlPdu { Sequence = StatSnUse.Current };
            Bhs.Init(pdu.Header, Opcode.NopIn, Bhs.FinalBit, 0);
            Bhs.SetU32(pdu.Header, Bhs.InitiatorTaskTagOffset, Bhs.ReservedTag);
            Bhs.SetU32(pdu.Header, Bhs.TargetTransferTagOffset, ttt);
            _pingSentAt = now;
            _pingTtt = ttt;
            Send(pdu);
        }
    }
}
