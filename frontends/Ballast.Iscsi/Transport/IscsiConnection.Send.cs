using System.Net.Sockets;
using System.Runtime.CompilerServices;
using Ballast.Iscsi.Pdu;
using Ballast.Iscsi.Scsi;

namespace Ballast.Iscsi.Transport;

/// <summary>
/// The sender: one loop per connection drains the send queue into a pinned buffer and writes it
/// with one send per batch. It assigns StatSN (in order on the wire) and fills ExpCmdSN/MaxCmdSN
/// at the last moment, so the window the initiator sees is always current.
/// </summary>
internal sealed partial class IscsiConnection
{
    private const int SendBufferSize = 256 * 1024;
    private readonly byte[] _sendBuffer;
    private readonly byte[] _header = new byte[Bhs.Length];
    private int _sendLength;
    private uint _statSn;

    private async Task SendLoopAsync(CancellationToken ct)
    {
        var reader = _out;
        try
        {
            while (await reader.WaitToReadAsync().ConfigureAwait(false))
            {
                while (reader.TryRead(out var item))
                {
                    if (SendBufferSize - _sendLength < 1024)
                    {
                        await FlushAsync(ct).ConfigureAwait(false);
                    }
                    if (!await SendItemAsync(item, ct).ConfigureAwait(false))
                    {
                        await FlushAsync(ct).ConfigureAwait(false);
                        await CloseAsync().ConfigureAwait(false);
                        return;
                    }
                }
                await FlushAsync(ct).ConfigureAwait(false);
            }
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException or OperationCanceledException or IOException)
        {
            await CloseAsync().ConfigureAwait(false);
        }
        finally
        {
            // Whatever is still queued will never be sent: retire the tasks.
            while (reader.TryRead(out var item))
            {
                if (item.Kind == OutKind.TaskResponse)
                {
                    RetireTask(item.Task!);
                }
                item.Control?.Sent?.TrySetResult();
            }
        }
    }

    /// <summary>False: close the connection after this item.</summary>
    private async ValueTask<bool> SendItemAsync(OutItem item, CancellationToken ct)
    {
        switch (item.Kind)
        {
            case OutKind.TaskResponse:
                var t = item.Task!;
                // Retire first, so this response already carries the MaxCmdSN it frees (the
                // initiator never sees a window smaller than the one we enforce).
                if (!t.Immediate)
                {
                    Session?.Retire();
                }
                if (!t.Aborted)
                {
                    await SendTaskResponseAsync(t, ct).ConfigureAwait(false);
                }
                ReturnTask(t);
                return true;
            case OutKind.ReadyToTransfer:
                SendR2T(item);
                return true;
            default:
                var c = item.Control!;
                FillSequence(c.Header, c.Sequence);
                await WritePduAsync(c.Header, c.Data.AsMemory(0, c.DataLength), ct).ConfigureAwait(false);
                if (c.StartFullFeature)
                {
                    // Digests start with the first PDU after the final login response (RFC 7143 §13.1).
                    _txHeaderDigest = Params.HeaderDigest;
                    _txDataDigest = Params.DataDigest;
                }
                if (c.Sent != null)
                {
                    await FlushAsync(ct).ConfigureAwait(false);
                    c.Sent.TrySetResult();
                }
                return !c.CloseAfter;
        }
    }

    private void FillSequence(byte[] h, StatSnUse use)
    {
        if (use == StatSnUse.None)
        {
            return;
        }
        Bhs.SetU32(h, Bhs.StatSnOffset, use == StatSnUse.Advance ? _statSn++ : _statSn);
        FillWindow(h);
    }

    private void FillWindow(byte[] h)
    {
        if (Session is { } s)
        {
            Bhs.SetU32(h, Bhs.ExpCmdSnOffset, s.ExpCmdSn);
            Bhs.SetU32(h, Bhs.MaxCmdSnOffset, s.MaxCmdSn);
        }
    }

    private void SendR2T(OutItem item)
    {
        var t = item.Task!;
        var h = _header;
        Bhs.Init(h, Opcode.ReadyToTransfer, Bhs.FinalBit, 0);
        Bhs.SetU64(h, Bhs.LunOffset, t.LunField);
        Bhs.SetU32(h, Bhs.InitiatorTaskTagOffset, t.Itt);
        Bhs.SetU32(h, Bhs.TargetTransferTagOffset, item.A);
        Bhs.SetU32(h, Bhs.StatSnOffset, _statSn);
        FillWindow(h);
        Bhs.SetU32(h, Bhs.R2TSnOffset, item.B);
        Bhs.SetU32(h, Bhs.BufferOffsetOffset, (uint)item.C);
        Bhs.SetU32(h, Bhs.DesiredDataTransferLengthOffset, (uint)item.D);
        WriteHeaderOnly(h);
    }

    /// <summary>
    /// Data-In PDUs of at most the initiator's MaxRecvDataSegmentLength, F at the end of each
    /// MaxBurstLength sequence; status goes in the last Data-In (phase collapse, RFC 7143 §11.7.4)
    /// unless there is sense data, which needs a SCSI Response PDU.
    /// </summary>
    [AsyncMethodBuilder(typeof(Ballast.Engine.Async.PooledValueTaskBuilder))]
    private async ValueTask SendTaskResponseAsync(ScsiTask t, CancellationToken ct)
    {
        var edtl = (int)Math.Min(t.ExpectedLength, int.MaxValue);
        var send = t.ReadBit ? Math.Min(t.DataInLength, edtl) : 0;
        byte residualFlags = 0;
        uint residual = 0;
        if (t.ReadBit || (!t.WriteBit && t.DataInLength > 0))
        {
            var produced = t.DataInLength;
            if (produced < edtl)
            {
                residualFlags = Bhs.ResidualUnderflowBit;
                residual = (uint)(edtl - produced);
            }
            else if (produced > edtl)
            {
                residualFlags = Bhs.ResidualOverflowBit;
                residual = (uint)(produced - edtl);
            }
        }
        else if (t.WriteBit || t.TransferLength > 0)
        {
            var wanted = t.TransferLength < 0 ? edtl : t.TransferLength;
            if (wanted < edtl)
            {
                residualFlags = Bhs.ResidualUnderflowBit;
                residual = (uint)(edtl - wanted);
            }
            else if (wanted > edtl)
            {
                residualFlags = Bhs.ResidualOverflowBit;
                residual = (uint)(wanted - edtl);
            }
        }
        var collapse = send > 0 && t.Status == ScsiStatus.Good && t.SenseLength == 0;
        if (send > 0)
        {
            var maxSegment = Params.InitiatorMaxRecvDataSegmentLength;
            var burst = Math.Max(Params.MaxBurstLength, maxSegment);
            var offset = 0;
            var inBurst = 0;
            while (offset < send)
            {
                var n = Math.Min(Math.Min(maxSegment, send - offset), burst - inBurst);
                var last = offset + n == send;
                inBurst += n;
                var endOfSequence = last || inBurst == burst;
                var h = _header;
                var flags = (byte)(endOfSequence ? Bhs.FinalBit : 0);
                if (last && collapse)
                {
                    flags |= (byte)(Bhs.StatusBit | residualFlags);
                }
                Bhs.Init(h, Opcode.DataIn, flags, n);
                if (last && collapse)
                {
                    h[Bhs.StatusByte] = t.Status;
                    Bhs.SetU32(h, Bhs.StatSnOffset, _statSn++);
                    Bhs.SetU32(h, Bhs.ResidualCountOffset, residual);
                }
                Bhs.SetU32(h, Bhs.InitiatorTaskTagOffset, t.Itt);
                Bhs.SetU32(h, Bhs.TargetTransferTagOffset, Bhs.ReservedTag);
                FillWindow(h);
                Bhs.SetU32(h, Bhs.DataSnOffset, t.DataInPdus++);
                Bhs.SetU32(h, Bhs.BufferOffsetOffset, (uint)offset);
                await WritePduAsync(h, t.Buffer.AsMemory(offset, n), ct).ConfigureAwait(false);
                offset += n;
                if (endOfSequence)
                {
                    inBurst = 0;
                }
            }
            if (collapse)
            {
                return;
            }
        }
        // SCSI Response (RFC 7143 §11.4): sense data is preceded by its 2-byte length.
        var r = _header;
        var senseBytes = t.SenseLength > 0 ? 2 + t.SenseLength : 0;
        Bhs.Init(r, Opcode.ScsiResponse, (byte)(Bhs.FinalBit | residualFlags), senseBytes);
        r[Bhs.ResponseByte] = 0x00; // command completed at target
        r[Bhs.StatusByte] = t.Status;
        Bhs.SetU32(r, Bhs.InitiatorTaskTagOffset, t.Itt);
        Bhs.SetU32(r, Bhs.StatSnOffset, _statSn++);
        FillWindow(r);
        Bhs.SetU32(r, Bhs.ExpDataSnOffset, t.ReadBit ? t.DataInPdus : t.R2TSn);
        Bhs.SetU32(r, Bhs.ResidualCountOffset, residual);
        if (senseBytes > 0)
        {
            // The sense goes just before the task's own sense buffer would be reused; copy via the small scratch.
            var data = _senseScratch;
            data[0] = (byte)(t.SenseLength >> 8);
            data[1] = (byte)t.SenseLength;
            t.SenseData.AsSpan(0, t.SenseLength).CopyTo(data.AsSpan(2));
            await WritePduAsync(r, data.AsMemory(0, senseBytes), ct).ConfigureAwait(false);
        }
        else
        {
            WriteHeaderOnly(r);
        }
    }

    private readonly byte[] _senseScratch = new byte[2 + Sense.MaxLength];

    private bool _txHeaderDigest;
    private bool _txDataDigest;

    private int HeaderBytes => Bhs.Length + (_txHeaderDigest ? Bhs.DigestLength : 0);

    /// <summary>Appends a header with no data; the buffer always has room for one (flushes keep it so).</summary>
    private void WriteHeaderOnly(byte[] header)
    {
        if (SendBufferSize - _sendLength < HeaderBytes)
        {
            throw new InvalidOperationException("send buffer full"); // callers flush before; never happens
        }
        AppendHeader(header);
    }

    private void AppendHeader(byte[] header)
    {
        header.CopyTo(_sendBuffer, _sendLength);
        _sendLength += Bhs.Length;
        if (_txHeaderDigest)
        {
            Digest.Write(_sendBuffer.AsSpan(_sendLength), Digest.Compute(header));
            _sendLength += Bhs.DigestLength;
        }
    }

    [AsyncMethodBuilder(typeof(Ballast.Engine.Async.PooledValueTaskBuilder))]
    private async ValueTask WritePduAsync(byte[] header, ReadOnlyMemory<byte> data, CancellationToken ct)
    {
        // Room for the header, plus (for header-only PDUs) the next header-only PDU.
        if (SendBufferSize - _sendLength < HeaderBytes + 64)
        {
            await FlushAsync(ct).ConfigureAwait(false);
        }
        AppendHeader(header);
        if (data.Length == 0)
        {
            return;
        }
        var dataDigest = _txDataDigest;
        var crc = Digest.Begin();
        var rest = data;
        while (rest.Length > 0)
        {
            if (_sendLength == SendBufferSize)
            {
                await FlushAsync(ct).ConfigureAwait(false);
            }
            var n = Math.Min(rest.Length, SendBufferSize - _sendLength);
            var chunk = rest.Span[..n];
            chunk.CopyTo(_sendBuffer.AsSpan(_sendLength));
            if (dataDigest)
            {
                crc = Digest.Update(crc, chunk);
            }
            _sendLength += n;
            rest = rest[n..];
        }
        var pad = Bhs.Pad(data.Length);
        if (SendBufferSize - _sendLength < pad + Bhs.DigestLength + HeaderBytes + 64)
        {
            await FlushAsync(ct).ConfigureAwait(false);
        }
        if (pad > 0)
        {
            var p = _sendBuffer.AsSpan(_sendLength, pad);
            p.Clear();
            if (dataDigest)
            {
                crc = Digest.Update(crc, p);
            }
            _sendLength += pad;
        }
        if (dataDigest)
        {
            Digest.Write(_sendBuffer.AsSpan(_sendLength), Digest.End(crc));
            _sendLength += Bhs.DigestLength;
        }
    }

    [AsyncMethodBuilder(typeof(Ballast.Engine.Async.PooledValueTaskBuilder))]
    private async ValueTask FlushAsync(CancellationToken ct)
    {
        var sent = 0;
        while (sent < _sendLength)
        {
            sent += await _socket.SendAsync(_sendBuffer.AsMemory(sent, _sendLength - sent), SocketFlags.None, ct).ConfigureAwait(false);
        }
        _sendLength = 0;
    }
}
