using System.Runtime.CompilerServices;
using Ballast.Engine.Async;
using Ballast.Engine.Volumes;
using Ballast.Nbd.Protocol;

namespace Ballast.Nbd.Transmission;

/// <summary>
/// Request validation and execution (doc/proto.md "Request types" and "Error values"): flags a
/// command does not take and ranges past the end are refused before the volume sees them.
/// </summary>
internal sealed partial class TransmissionSession
{
    private bool Structured => _export.Structured;

    private bool ReadOnly => (_export.Flags & TransmissionFlags.ReadOnly) != 0;

    private void Dispatch(RequestSlot s)
    {
        if (Validate(s))
        {
            s.Track(ExecuteAsync(s));
        }
        else
        {
            Complete(s);
        }
    }

    /// <summary>False (and the slot failed) if the request must not reach the volume.</summary>
    private bool Validate(RequestSlot s)
    {
        var allowed = CommandFlags.Fua | s.Command switch
        {
            NbdCommand.Read => Structured ? CommandFlags.Df : 0,
            NbdCommand.WriteZeroes => CommandFlags.NoHole | CommandFlags.FastZero,
            NbdCommand.BlockStatus => CommandFlags.ReqOne,
            _ => 0,
        };
        if ((s.Flags & ~allowed) != 0)
        {
            s.Fail(NbdErrno.EInval, $"flags 0x{(ushort)s.Flags:x} are not valid for {s.Command}");
            return false;
        }
        var size = (ulong)_volume.Size;
        var beyond = s.Offset > size || s.Length > size - s.Offset;
        switch (s.Command)
        {
            case NbdCommand.Read:
            case NbdCommand.Cache:
                if (s.Length > (uint)_options.MaxPayload)
                {
                    s.Fail(NbdErrno.EInval, $"{s.Command} of {s.Length} bytes is more than the maximum block size {_options.MaxPayload}");
                    return false;
                }
                return CheckRange(s, beyond, NbdErrno.EInval);
            case NbdCommand.Write:
            case NbdCommand.WriteZeroes:
                if (ReadOnly)
                {
                    s.Fail(NbdErrno.EPerm, $"export {_export.Name} is read-only");
                    return false;
                }
                return CheckRange(s, beyond, NbdErrno.ENoSpc);
            case NbdCommand.Trim:
                if (ReadOnly)
                {
                    s.Fail(NbdErrno.EPerm, $"export {_export.Name} is read-only");
                    return false;
                }
                return CheckRange(s, beyond, NbdErrno.EInval);
            case NbdCommand.Flush:
                if (s.Offset != 0 || s.Length != 0)
                {
                    s.Fail(NbdErrno.EInval, "NBD_CMD_FLUSH takes no offset or length");
                    return false;
                }
                return true;
            case NbdCommand.BlockStatus:
                if (_export.AllocationContext == 0)
                {
                    s.Fail(NbdErrno.EInval, "no metadata context was selected for this export");
                    return false;
                }
                if (s.Length == 0)
                {
                    s.Fail(NbdErrno.EInval, "NBD_CMD_BLOCK_STATUS needs a length");
                    return false;
                }
                return CheckRange(s, beyond, NbdErrno.EInval);
            default:
                s.Fail(NbdErrno.EInval, $"unknown command {(ushort)s.Command}");
                return false;
        }
    }

    private bool CheckRange(RequestSlot s, bool beyond, uint error)
    {
        if (beyond)
        {
            s.Fail(error, $"{s.Command} at offset {s.Offset} length {s.Length} is beyond the end of {_export.Name} ({_volume.Size} bytes)");
            return false;
        }
        return true;
    }

    /// <summary>
    /// On the receive loop: this is the only request in flight and no other has begun to arrive,
    /// in our buffer or the kernel's. A client with more to send must not wait behind a device
    /// write on this loop: measured, a busy fio at depth 32 otherwise had half its writes go alone.
    /// </summary>
    private bool IsAlone() => Volatile.Read(ref _inFlight) == 1 && _recvEnd == _recvStart && _socket is { Available: 0 };

    [AsyncMethodBuilder(typeof(PooledValueTaskBuilder))]
    private async ValueTask ExecuteAsync(RequestSlot s)
    {
        var offset = (long)s.Offset;
        var length = (int)s.Length;
        var fua = (s.Flags & CommandFlags.Fua) != 0;
        try
        {
            switch (s.Command)
            {
                case NbdCommand.Read:
                    // What follows the read only queues the reply: it may run on the engine's I/O thread.
                    s.RentBuffer(length);
                    if (Structured && (s.Flags & CommandFlags.Df) == 0 && length > 0)
                    {
                        // Holes go back as NBD_REPLY_TYPE_OFFSET_HOLE; a range without data needs no read at all.
                        s.RangeCount = _volume.GetAllocation(offset, length, s.Ranges);
                        if (HasData(s))
                        {
                            await _volume.ReadInlineAsync(offset, s.Data).ConfigureAwait(false);
                        }
                    }
                    else
                    {
                        await _volume.ReadInlineAsync(offset, s.Data).ConfigureAwait(false);
                    }
                    Interlocked.Add(ref BytesRead, length);
                    break;
                case NbdCommand.Write:
                    // What follows the write only queues the reply: it may run on the engine's thread.
                    // Alone: at queue depth 1 the receive loop may write it itself (nothing else to start).
                    await _volume.WriteAsync(offset, s.Data, WriteFlags.CompleteInline
                        | (fua ? WriteFlags.Fua : WriteFlags.None) | (IsAlone() ? WriteFlags.Alone : WriteFlags.None)).ConfigureAwait(false);
                    Interlocked.Add(ref BytesWritten, length);
                    break;
                case NbdCommand.Flush:
                    // Like a write, what follows only queues the reply: it may run on the sync thread.
                    await _volume.FlushInlineAsync().ConfigureAwait(false);
                    break;
                case NbdCommand.Trim:
                    await _volume.TrimAsync(offset, s.Length).ConfigureAwait(false);
                    if (fua)
                    {
                        await _volume.FlushInlineAsync().ConfigureAwait(false);
                    }
                    break;
                case NbdCommand.WriteZeroes:
                    // Zeroes never cost data blocks here, so NBD_CMD_FLAG_FAST_ZERO always succeeds.
                    await _volume.WriteZeroesAsync(offset, s.Length, mayDeallocate: (s.Flags & CommandFlags.NoHole) == 0).ConfigureAwait(false);
                    if (fua)
                    {
                        await _volume.FlushInlineAsync().ConfigureAwait(false);
                    }
                    break;
                case NbdCommand.Cache:
                    // Reads come from the volume's own storage; there is nothing to warm.
                    break;
                case NbdCommand.BlockStatus:
                    s.EnsureStatusRanges();
                    s.RangeCount = _volume.GetAllocation(offset, s.Length, s.Ranges);
                    break;
            }
        }
        catch (BlockVolumeException e)
        {
            var write = s.Command is NbdCommand.Write or NbdCommand.WriteZeroes;
            s.Fail(NbdErrno.From(e.Error, write), e.Message);
            s.Exception = e;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            s.Fail(NbdErrno.EIo, $"internal error: {e.Message}");
            s.Exception = e;
        }
    }

    private static bool HasData(RequestSlot s)
    {
        for (var i = 0; i < s.RangeCount; i++)
        {
            if (s.Ranges[i].State == AllocationState.Data)
            {
                return true;
            }
        }
        // Ranges that did not fit the slot are served as data.
        return s.RangeCount == s.Ranges.Length || s.RangeCount == 0;
    }
}
