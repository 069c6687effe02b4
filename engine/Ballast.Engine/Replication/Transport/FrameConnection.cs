using System.Buffers;
using System.Net.Sockets;
using Ballast.Engine.Async;
using Ballast.Engine.Replication.Wire;

namespace Ballast.Engine.Replication.Transport;

/// <summary>One frame to send. Payload = the record header (if any) followed by <see cref="Body"/>.</summary>
public struct OutFrame
{
    public FrameType Type;
    public ushort Flags;
    public uint Volume;
    public ulong Id;
    public bool HasRecord;
    public RecordHeader Record;
    /// <summary>Data blocks or a small message; must stay valid until the frame's response arrives (or the connection fails).</summary>
    public ReadOnlyMemory<byte> Body;

    public readonly int PayloadLength => (HasRecord ? RecordHeader.Size : 0) + Body.Length;
}

/// <summary>
/// A TCP connection carrying replication frames both ways. Senders queue frames without
/// blocking (the primary queues under the appender's lock, so queue order is LSN order). The
/// first frame queued to an idle connection starts a drain, which computes CRCs and writes
/// everything queued, gathering small frames, until the queue is empty. Queued inside a
/// <see cref="CompletionBatch"/> (the appender completing records, a receive loop handling what
/// one read brought), the drain runs on that thread when the batch ends, until the socket is
/// full: each thread-pool hop costs a wake-up on the write's path. Otherwise it is scheduled on
/// the thread pool, with the connection as its own work item (waking a send loop through a
/// semaphore allocated a task, a node and a cancellation promise each time it had gone idle).
/// One receive loop checks each frame (limits, CRC) and hands it to the owner with a pooled
/// buffer the owner returns; it keeps a batch open while it handles frames already received.
/// </summary>
public sealed class FrameConnection : IAsyncDisposable, IThreadPoolWorkItem, ICompletionBatchListener
{
    private const int SendBufferSize = 256 * 1024;
    private const int CopyLimit = 16 * 1024;
    private const int ReceiveBufferSize = 256 * 1024;

    private readonly Socket _socket;
    private readonly NetworkStream _stream;
    private readonly object _lock = new();
    private List<OutFrame> _queue = [];
    private List<OutFrame> _sending = [];
    private readonly CancellationTokenSource _closed = new();
    private readonly byte[] _send = new byte[SendBufferSize];
    private string? _closeReason;
    // Under _lock: a drain is scheduled or running. Volatile for DisposeAsync's wait.
    private volatile bool _draining;
    // Under _lock: a drain starts when the batch open on some thread ends.
    private bool _deferred;
    // Under _lock: no more frames are queued or written; Closed fires just after it is set.
    private bool _closing;

    public FrameConnection(Socket socket)
    {
        _socket = socket;
        if (socket.AddressFamily is AddressFamily.InterNetwork or AddressFamily.InterNetworkV6)
        {
            socket.NoDelay = true;
        }
        _stream = new NetworkStream(socket, ownsSocket: true);
        Remote = socket.RemoteEndPoint?.ToString() ?? "?";
    }

    public string Remote { get; }

    /// <summary>Cancelled when the connection fails or is closed.</summary>
    public CancellationToken Closed => _closed.Token;

    public string? CloseReason => Volatile.Read(ref _closeReason);

    /// <summary>Handles one received frame; the payload buffer is rented from the shared pool and the handler returns it.</summary>
    public delegate ValueTask FrameHandler(FrameHeader header, byte[] payload);

    public void Start(FrameHandler onFrame)
    {
        _ = Task.Run(() => ReceiveLoopAsync(onFrame));
    }

    /// <summary>Queues a frame; false if the connection is already closed.</summary>
    public bool Send(in OutFrame frame)
    {
        lock (_lock)
        {
            if (_closing)
            {
                return false;
            }
            _queue.Add(frame);
            if (_draining || _deferred)
            {
                return true;
            }
            if (CompletionBatch.TryDefer(this))
            {
                _deferred = true;
                return true;
            }
            _draining = true;
        }
        ThreadPool.UnsafeQueueUserWorkItem(this, preferLocal: false);
        return true;
    }

    void IThreadPoolWorkItem.Execute() => _ = DrainAsync();

    /// <summary>The batch a send was deferred to ended: drain on this thread (a running drain takes the queue as it is).</summary>
    public void OnBatchCompleted()
    {
        lock (_lock)
        {
            _deferred = false;
            if (_draining)
            {
                return;
            }
            _draining = true;
        }
        _ = DrainAsync();
    }

    /// <summary>Writes what is queued until the queue is empty; suspends (and allocates) only while the socket is full.</summary>
    private async ValueTask DrainAsync()
    {
        try
        {
            while (true)
            {
                lock (_lock)
                {
                    if (_queue.Count == 0 || _closing)
                    {
                        _queue.Clear();
                        _draining = false;
                        return;
                    }
                    (_queue, _sending) = (_sending, _queue);
                }
                var used = 0;
                foreach (var f in _sending)
                {
                    var payload = f.PayloadLength;
                    if (used + FrameHeader.Size + RecordHeader.Size + Math.Min(f.Body.Length, CopyLimit + 1) > _send.Length)
                    {
                        await _stream.WriteAsync(_send.AsMemory(0, used), _closed.Token).ConfigureAwait(false);
                        used = 0;
                    }
                    var header = new FrameHeader { Type = f.Type, Flags = f.Flags, Length = payload, Volume = f.Volume, Id = f.Id };
                    var at = used;
                    used += FrameHeader.Size;
                    if (f.HasRecord)
                    {
                        f.Record.Write(_send.AsSpan(used, RecordHeader.Size));
                        used += RecordHeader.Size;
                    }
                    var recordPart = _send.AsSpan(at + FrameHeader.Size, used - at - FrameHeader.Size);
                    WriteHeader(header, _send.AsSpan(at, FrameHeader.Size), recordPart, f.Body.Span);
                    if (f.Body.Length <= CopyLimit)
                    {
                        f.Body.Span.CopyTo(_send.AsSpan(used));
                        used += f.Body.Length;
                    }
                    else
                    {
                        await _stream.WriteAsync(_send.AsMemory(0, used), _closed.Token).ConfigureAwait(false);
                        used = 0;
                        await _stream.WriteAsync(f.Body, _closed.Token).ConfigureAwait(false);
                    }
                }
                _sending.Clear();
                if (used > 0)
                {
                    await _stream.WriteAsync(_send.AsMemory(0, used), _closed.Token).ConfigureAwait(false);
                }
            }
        }
        catch (Exception e)
        {
            // Whatever the failure, the connection closes: a drain that stopped without closing
            // would leave frames (and the buffers they point at) queued for ever.
            _sending.Clear();
            try
            {
                Close($"send failed: {e.Message}");
            }
            finally
            {
                lock (_lock)
                {
                    _queue.Clear();
                    _draining = false;
                }
            }
        }
    }

    private static void WriteHeader(FrameHeader header, Span<byte> h, ReadOnlySpan<byte> record, ReadOnlySpan<byte> body)
    {
        // CRC over header (CRC field zero), then the record header, then the body.
        header.Write(h, record);
        var crc = Crc32C.Append(System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(h[24..]), body);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32LittleEndian(h[24..], crc);
    }

    /// <summary>
    /// Receives into one buffer as much as the socket holds and takes frames out of it: under
    /// load many frames arrive together, and reading each header and payload with its own call
    /// cost two receive syscalls per frame on both sides of the link. A payload that did not
    /// arrive with its header is read straight into its own buffer.
    /// </summary>
    private async Task ReceiveLoopAsync(FrameHandler onFrame)
    {
        var header = new byte[FrameHeader.Size];
        var buffer = new byte[ReceiveBufferSize];
        int start = 0, end = 0;
        // True while this loop holds a batch open on its thread: it ends before every wait.
        var batch = false;
        try
        {
            while (!_closed.IsCancellationRequested)
            {
                while (end - start < FrameHeader.Size)
                {
                    if (start == end)
                    {
                        start = end = 0;
                    }
                    else if (buffer.Length - start < FrameHeader.Size)
                    {
                        Buffer.BlockCopy(buffer, start, buffer, 0, end - start);
                        end -= start;
                        start = 0;
                    }
                    CompletionBatch.End(ref batch);
                    var n = await _stream.ReadAsync(buffer.AsMemory(end), _closed.Token).ConfigureAwait(false);
                    if (n == 0)
                    {
                        throw new EndOfStreamException();
                    }
                    end += n;
                }
                batch |= CompletionBatch.TryOpen();
                buffer.AsSpan(start, FrameHeader.Size).CopyTo(header);
                start += FrameHeader.Size;
                if (!FrameHeader.TryRead(header, out var h, out var problem))
                {
                    Close(problem!);
                    return;
                }
                var payload = ArrayPool<byte>.Shared.Rent(Math.Max(1, h.Length));
                try
                {
                    var buffered = Math.Min(end - start, h.Length);
                    buffer.AsSpan(start, buffered).CopyTo(payload);
                    start += buffered;
                    if (buffered < h.Length)
                    {
                        CompletionBatch.End(ref batch);
                        await _stream.ReadExactlyAsync(payload.AsMemory(buffered, h.Length - buffered), _closed.Token).ConfigureAwait(false);
                        batch |= CompletionBatch.TryOpen();
                    }
                    if (!FrameHeader.CheckCrc(header, payload.AsSpan(0, h.Length), h.Crc))
                    {
                        ArrayPool<byte>.Shared.Return(payload);
                        Close("a frame failed its CRC32C");
                        return;
                    }
                }
                catch
                {
                    ArrayPool<byte>.Shared.Return(payload);
                    throw;
                }
                var handled = onFrame(h, payload);
                if (!handled.IsCompleted)
                {
                    CompletionBatch.End(ref batch);
                }
                await handled.ConfigureAwait(false);
            }
        }
        catch (Exception e)
        {
            // Any failure, a handler's or an inline continuation's included, closes the
            // connection: a loop that ended quietly would leave the link open and deaf.
            Close(e is EndOfStreamException ? "the peer closed the connection" : $"receive failed: {e.Message}");
        }
        finally
        {
            CompletionBatch.End(ref batch);
        }
    }

    /// <summary>Closes the connection (idempotent); <see cref="Closed"/> fires with the first reason.</summary>
    public void Close(string reason)
    {
        lock (_lock)
        {
            if (_closing)
            {
                return;
            }
            _closing = true;
            _closeReason = reason;
        }
        // Outside the lock: cancelling runs whatever waits on Closed, which may send on other connections.
        try
        {
            _closed.Cancel();
        }
        catch (ObjectDisposedException)
        {
            // DisposeAsync on another thread got there first (it saw _closing and went on).
        }
        try
        {
            _socket.Shutdown(SocketShutdown.Both);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
        }
        _socket.Dispose();
    }

    public async ValueTask DisposeAsync()
    {
        Close("closed");
        // A Close racing on another thread may not have cancelled yet: Closed fires before disposal.
        _closed.Cancel();
        // A drain stops at its next write or queue check once the socket is closed.
        for (var i = 0; i < 500 && _draining; i++)
        {
            await Task.Delay(10).ConfigureAwait(false);
        }
        await _stream.DisposeAsync().ConfigureAwait(false);
        _closed.Dispose();
    }
}
