using System.Buffers;
using Ballast.Engine.Buffers;
using Ballast.Engine.Volumes;
using Ballast.Nbd.Protocol;

namespace Ballast.Nbd.Transmission;

/// <summary>
/// One request in flight on a connection, reused for the next one when its reply is sent, so
/// serving a request allocates nothing. It carries the parsed header, the payload buffer (the
/// write data, or the data read), the outcome, and the allocation map of a structured read.
/// </summary>
internal sealed class RequestSlot
{
    public const int ReadRanges = 64;
    public const int StatusRanges = 512;

    private readonly Action _onCompleted;
    private readonly Action<RequestSlot> _complete;
    private ValueTask _pending;

    public RequestSlot(Action<RequestSlot> complete)
    {
        _complete = complete;
        _onCompleted = OnCompleted;
    }

    public ulong Cookie;
    public NbdCommand Command;
    public CommandFlags Flags;
    public ulong Offset;
    public uint Length;

    /// <summary>The payload: the write's data, or the data read; valid from <see cref="RentBuffer"/> until <see cref="ReturnBuffer"/>.</summary>
    public Memory<byte> Data;

    // Small payloads come from the shared array pool; large ones from aligned buffers, which the
    // log writes to the device as they are (no copy into its batch) and reads fill directly.
    private byte[]? _array;
    private AlignedBuffer? _aligned;

    /// <summary>0 on success, else the NBD error value; <see cref="Message"/> says why.</summary>
    public uint Error;
    public string? Message;

    /// <summary>Allocation ranges for a structured read (data / hole) or a block status reply.</summary>
    public AllocationRange[] Ranges = new AllocationRange[ReadRanges];
    public int RangeCount;

    public void Reset(ulong cookie, NbdCommand command, CommandFlags flags, ulong offset, uint length)
    {
        Cookie = cookie;
        Command = command;
        Flags = flags;
        Offset = offset;
        Length = length;
        Error = 0;
        Message = null;
        Exception = null;
        RangeCount = 0;
    }

    public void Fail(uint error, string message)
    {
        Error = error;
        Message = message;
    }

    public void RentBuffer(int length)
    {
        if (length >= LargeBufferPool.MinBytes)
        {
            _aligned = LargeBufferPool.Shared.Rent(length);
            Data = _aligned.Memory[..length];
        }
        else
        {
            _array = length == 0 ? [] : ArrayPool<byte>.Shared.Rent(length);
            Data = _array.AsMemory(0, length);
        }
    }

    public void ReturnBuffer()
    {
        if (_array is { Length: > 0 } b)
        {
            ArrayPool<byte>.Shared.Return(b);
        }
        if (_aligned != null)
        {
            LargeBufferPool.Shared.Return(_aligned);
        }
        _array = null;
        _aligned = null;
        Data = default;
    }

    public void EnsureStatusRanges()
    {
        if (Ranges.Length < StatusRanges)
        {
            Ranges = new AllocationRange[StatusRanges];
        }
    }

    /// <summary>Waits for the operation without blocking: the reply is queued when it completes.</summary>
    public void Track(ValueTask operation)
    {
        _pending = operation;
        if (operation.IsCompleted)
        {
            OnCompleted();
        }
        else
        {
            operation.ConfigureAwait(false).GetAwaiter().UnsafeOnCompleted(_onCompleted);
        }
    }

    private void OnCompleted()
    {
        var op = _pending;
        _pending = default;
        try
        {
            op.GetAwaiter().GetResult();
        }
        catch (Exception e)
        {
            Error = Error == 0 ? NbdErrno.EIo : Error;
            Message ??= e.Message;
            Exception = e;
        }
        _complete(this);
    }

    /// <summary>What failed, for the log (the client sees <see cref="Error"/>).</summary>
    public Exception? Exception;
}
