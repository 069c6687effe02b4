using System.Runtime.CompilerServices;
using Ballast.Engine.Async;
using System.Buffers.Binary;
using System.Text;
using Ballast.Engine.Volumes;
using Ballast.Nbd.Protocol;

namespace Ballast.Nbd.Transmission;

/// <summary>
/// The send loop: replies in completion order, small ones gathered in one buffer and written
/// together, large read data written straight from the request's buffer. Simple replies unless
/// structured replies were negotiated (then reads, errors and block status use chunks).
/// </summary>
internal sealed partial class TransmissionSession
{
    private const int SendBufferSize = 64 * 1024;
    private const int CopyLimit = 16 * 1024;
    private const int MaxMessageBytes = 1024;

    private byte[] _send = [];
    private int _sendUsed;
    private bool _broken;
    private FailureLogLimit _failureLog;

    private async Task SendLoopAsync()
    {
        while (true)
        {
            await _replyReady.WaitAsync().ConfigureAwait(false);
            while (true)
            {
                RequestSlot? s = null;
                lock (_lock)
                {
                    if (_completed.Count > 0)
                    {
                        s = _completed.Dequeue();
                    }
                }
                if (s == null)
                {
                    break;
                }
                if (!_broken)
                {
                    try
                    {
                        await WriteReplyAsync(s).ConfigureAwait(false);
                    }
                    catch (Exception e) when (e is IOException or ObjectDisposedException or NotSupportedException)
                    {
                        // The client is gone: keep completing requests so their buffers come back.
                        _broken = true;
                    }
                }
                LogOutcome(s);
                Release(s);
            }
            await FlushAsync().ConfigureAwait(false);
            lock (_lock)
            {
                if (!(_receiveDone && _inFlight == 0 && _completed.Count == 0))
                {
                    continue;
                }
            }
            if (_failureLog.TakeSuppressed() is > 0 and var n)
            {
                Log.FailuresSuppressed(_log, _peer, _export.Name, n);
            }
            return;
        }
    }

    [AsyncMethodBuilder(typeof(PooledValueTaskBuilder))]
    private async ValueTask FlushAsync()
    {
        if (_sendUsed == 0 || _broken)
        {
            _sendUsed = 0;
            return;
        }
        try
        {
            await _stream.WriteAsync(_send.AsMemory(0, _sendUsed)).ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or NotSupportedException)
        {
            _broken = true;
        }
        _sendUsed = 0;
    }

    [AsyncMethodBuilder(typeof(PooledValueTaskBuilder))]
    private async ValueTask ReserveAsync(int bytes)
    {
        if (_sendUsed + bytes > _send.Length)
        {
            await FlushAsync().ConfigureAwait(false);
        }
    }

    [AsyncMethodBuilder(typeof(PooledValueTaskBuilder))]
    private async ValueTask WriteReplyAsync(RequestSlot s)
    {
        if (!Structured)
        {
            await ReserveAsync(16).ConfigureAwait(false);
            PutSimpleHeader(s.Cookie, s.Error);
            if (s.Command == NbdCommand.Read && s.Error == 0)
            {
                await PutDataAsync(s.Data).ConfigureAwait(false);
            }
            return;
        }
        if (s.Error != 0)
        {
            await PutErrorChunkAsync(s).ConfigureAwait(false);
            return;
        }
        switch (s.Command)
        {
            case NbdCommand.Read:
                await PutReadChunksAsync(s).ConfigureAwait(false);
                break;
            case NbdCommand.BlockStatus:
                await PutBlockStatusAsync(s).ConfigureAwait(false);
                break;
            default:
                // Structured replies may still answer payload-free commands with a simple reply.
                await ReserveAsync(16).ConfigureAwait(false);
                PutSimpleHeader(s.Cookie, 0);
                break;
        }
    }

    private void PutSimpleHeader(ulong cookie, uint error)
    {
        var b = _send.AsSpan(_sendUsed, 16);
        BinaryPrimitives.WriteUInt32BigEndian(b, NbdMagic.SimpleReply);
        BinaryPrimitives.WriteUInt32BigEndian(b[4..], error);
        BinaryPrimitives.WriteUInt64BigEndian(b[8..], cookie);
        _sendUsed += 16;
    }

    private void PutChunkHeader(ulong cookie, ReplyFlags flags, ChunkType type, uint length)
    {
        var b = _send.AsSpan(_sendUsed, 20);
        BinaryPrimitives.WriteUInt32BigEndian(b, NbdMagic.StructuredReply);
        BinaryPrimitives.WriteUInt16BigEndian(b[4..], (ushort)flags);
        BinaryPrimitives.WriteUInt16BigEndian(b[6..], (ushort)type);
        BinaryPrimitives.WriteUInt64BigEndian(b[8..], cookie);
        BinaryPrimitives.WriteUInt32BigEndian(b[16..], length);
        _sendUsed += 20;
    }

    private void PutU64(ulong value)
    {
        BinaryPrimitives.WriteUInt64BigEndian(_send.AsSpan(_sendUsed), value);
        _sendUsed += 8;
    }

    private void PutU32(uint value)
    {
        BinaryPrimitives.WriteUInt32BigEndian(_send.AsSpan(_sendUsed), value);
        _sendUsed += 4;
    }

    /// <summary>Small data is copied into the send buffer; large data is written from where it is.</summary>
    [AsyncMethodBuilder(typeof(PooledValueTaskBuilder))]
    private async ValueTask PutDataAsync(ReadOnlyMemory<byte> data)
    {
        if (data.Length <= CopyLimit)
        {
            await ReserveAsync(data.Length).ConfigureAwait(false);
            data.CopyTo(_send.AsMemory(_sendUsed));
            _sendUsed += data.Length;
            return;
        }
        await FlushAsync().ConfigureAwait(false);
        if (!_broken)
        {
            await _stream.WriteAsync(data).ConfigureAwait(false);
        }
    }

    [AsyncMethodBuilder(typeof(PooledValueTaskBuilder))]
    private async ValueTask PutErrorChunkAsync(RequestSlot s)
    {
        var message = s.Message ?? "";
        await ReserveAsync(20 + 6 + MaxMessageBytes).ConfigureAwait(false);
        var headerAt = _sendUsed;
        _sendUsed += 20;
        PutU32(s.Error);
        var lengthAt = _sendUsed;
        _sendUsed += 2;
        // At most 256 characters: at most 1024 bytes of UTF-8, within the 4096-byte string limit.
        var text = message.AsSpan(0, Math.Min(message.Length, MaxMessageBytes / 4));
        var written = Encoding.UTF8.GetBytes(text, _send.AsSpan(_sendUsed, MaxMessageBytes));
        BinaryPrimitives.WriteUInt16BigEndian(_send.AsSpan(lengthAt), (ushort)written);
        _sendUsed += written;
        var end = _sendUsed;
        _sendUsed = headerAt;
        PutChunkHeader(s.Cookie, ReplyFlags.Done, ChunkType.Error, (uint)(6 + written));
        _sendUsed = end;
    }

    [AsyncMethodBuilder(typeof(PooledValueTaskBuilder))]
    private async ValueTask PutReadChunksAsync(RequestSlot s)
    {
        var data = s.Data;
        if (s.Length == 0)
        {
            await ReserveAsync(20).ConfigureAwait(false);
            PutChunkHeader(s.Cookie, ReplyFlags.Done, ChunkType.None, 0);
            return;
        }
        if (s.RangeCount == 0)
        {
            await PutDataChunkAsync(s.Cookie, true, s.Offset, data).ConfigureAwait(false);
            return;
        }
        var end = s.Offset + s.Length;
        var pos = s.Offset;
        var i = 0;
        while (pos < end)
        {
            // The next run: a data range, or consecutive zero/hole ranges merged into one hole.
            var isHole = i < s.RangeCount && s.Ranges[i].State != AllocationState.Data;
            var runEnd = end;
            if (i < s.RangeCount)
            {
                runEnd = (ulong)(s.Ranges[i].Offset + s.Ranges[i].Length);
                i++;
                while (isHole && i < s.RangeCount && s.Ranges[i].State != AllocationState.Data)
                {
                    runEnd = (ulong)(s.Ranges[i].Offset + s.Ranges[i].Length);
                    i++;
                }
                if (i == s.RangeCount && runEnd < end && !isHole)
                {
                    // The map stopped short (slot full): the rest is sent as data.
                    runEnd = end;
                }
            }
            runEnd = Math.Min(runEnd, end);
            var last = runEnd >= end;
            if (isHole)
            {
                await ReserveAsync(32).ConfigureAwait(false);
                PutChunkHeader(s.Cookie, last ? ReplyFlags.Done : 0, ChunkType.OffsetHole, 12);
                PutU64(pos);
                PutU32((uint)(runEnd - pos));
            }
            else
            {
                var from = (int)(pos - s.Offset);
                await PutDataChunkAsync(s.Cookie, last, pos, data[from..(int)(runEnd - s.Offset)]).ConfigureAwait(false);
            }
            pos = runEnd;
        }
    }

    [AsyncMethodBuilder(typeof(PooledValueTaskBuilder))]
    private async ValueTask PutDataChunkAsync(ulong cookie, bool last, ulong offset, ReadOnlyMemory<byte> data)
    {
        await ReserveAsync(28).ConfigureAwait(false);
        PutChunkHeader(cookie, last ? ReplyFlags.Done : 0, ChunkType.OffsetData, (uint)(8 + data.Length));
        PutU64(offset);
        await PutDataAsync(data).ConfigureAwait(false);
    }

    [AsyncMethodBuilder(typeof(PooledValueTaskBuilder))]
    private async ValueTask PutBlockStatusAsync(RequestSlot s)
    {
        var n = (s.Flags & CommandFlags.ReqOne) != 0 ? Math.Min(1, s.RangeCount) : s.RangeCount;
        await ReserveAsync(20 + 4 + (8 * n)).ConfigureAwait(false);
        PutChunkHeader(s.Cookie, ReplyFlags.Done, ChunkType.BlockStatus, (uint)(4 + (8 * n)));
        PutU32(_export.AllocationContext);
        for (var i = 0; i < n; i++)
        {
            var r = s.Ranges[i];
            PutU32((uint)r.Length);
            PutU32((uint)(r.State switch
            {
                AllocationState.Data => (AllocationFlags)0,
                AllocationState.Zero => AllocationFlags.Zero,
                _ => AllocationFlags.Hole | AllocationFlags.Zero,
            }));
        }
    }

    private void LogOutcome(RequestSlot s)
    {
        if (s.Error == 0)
        {
            return;
        }
        if (s.Exception is BlockVolumeException { Error: BlockError.Io or BlockError.NoSpace or BlockError.Fenced } || (s.Exception != null && s.Exception is not BlockVolumeException))
        {
            var allowed = _failureLog.Allow(Environment.TickCount64, out var suppressed);
            if (suppressed > 0)
            {
                Log.FailuresSuppressed(_log, _peer, _export.Name, suppressed);
            }
            if (allowed)
            {
                Log.RequestFailed(_log, _peer, _export.Name, s.Command.ToString(), s.Offset, s.Length, NbdErrno.Name(s.Error), s.Message ?? "");
            }
        }
        else
        {
            Log.RequestRefused(_log, _peer, _export.Name, s.Command.ToString(), s.Offset, s.Length, NbdErrno.Name(s.Error), s.Message ?? "");
        }
    }
}
