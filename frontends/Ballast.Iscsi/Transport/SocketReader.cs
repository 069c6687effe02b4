using System.Net.Sockets;
using System.Runtime.CompilerServices;

namespace Ballast.Iscsi.Transport;

/// <summary>
/// Buffered exact reads from a socket: small PDUs come out of one receive buffer; a large data
/// segment is received straight into its destination (the task's buffer), with no copy.
/// </summary>
internal sealed class SocketReader
{
    private readonly Socket _socket;
    private readonly byte[] _buffer;
    private int _start;
    private int _end;

    public SocketReader(Socket socket, int bufferSize = 64 * 1024)
    {
        _socket = socket;
        _buffer = GC.AllocateUninitializedArray<byte>(bufferSize, pinned: true);
    }

    /// <summary>True while received bytes wait here or in the kernel (the next PDU has begun to arrive).</summary>
    public bool HasBuffered => _end > _start || _socket.Available > 0;

    /// <summary>Bytes received from the peer so far (any read counts as activity).</summary>
    public long LastActivity { get; private set; } = Environment.TickCount64;

    [AsyncMethodBuilder(typeof(Ballast.Engine.Async.PooledValueTaskBuilder))]
    public async ValueTask ReadExactAsync(Memory<byte> destination, CancellationToken ct)
    {
        var buffered = Math.Min(_end - _start, destination.Length);
        if (buffered > 0)
        {
            _buffer.AsSpan(_start, buffered).CopyTo(destination.Span);
            _start += buffered;
            destination = destination[buffered..];
        }
        while (destination.Length > 0)
        {
            if (destination.Length >= _buffer.Length / 2)
            {
                var r = await _socket.ReceiveAsync(destination, SocketFlags.None, ct).ConfigureAwait(false);
                if (r == 0)
                {
                    throw new EndOfStreamException("the initiator closed the connection");
                }
                LastActivity = Environment.TickCount64;
                destination = destination[r..];
            }
            else
            {
                var r = await _socket.ReceiveAsync(_buffer.AsMemory(), SocketFlags.None, ct).ConfigureAwait(false);
                if (r == 0)
                {
                    throw new EndOfStreamException("the initiator closed the connection");
                }
                LastActivity = Environment.TickCount64;
                _start = 0;
                _end = r;
                var n = Math.Min(r, destination.Length);
                _buffer.AsSpan(0, n).CopyTo(destination.Span);
                _start = n;
                destination = destination[n..];
            }
        }
    }

    /// <summary>Reads and drops <paramref name="count"/> bytes.</summary>
    public async ValueTask SkipAsync(long count, CancellationToken ct)
    {
        var scratch = new byte[(int)Math.Min(count, 64 * 1024)];
        while (count > 0)
        {
            var n = (int)Math.Min(count, scratch.Length);
            await ReadExactAsync(scratch.AsMemory(0, n), ct).ConfigureAwait(false);
            count -= n;
        }
    }
}
