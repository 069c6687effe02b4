namespace Ballast.Engine.Log;

/// <summary>
/// The one lone client write acknowledged before its device write finished (see
/// <see cref="Appender"/>): its map entries already point at blocks the device may not hold yet,
/// so a read that resolved to them takes those bytes from the batch buffer instead.
///
/// A reader (<see cref="Pool.ReadDataAsync"/>) takes <see cref="Token"/> after resolving its map
/// (the writer begins before it applies the record, so a reader that sees the new map entry sees
/// the write begun), reads the device, then calls <see cref="TryOverlay"/>. At most one such
/// write is in flight: it holds the log.
/// </summary>
internal sealed class PendingWrite
{
    private readonly object _lock = new();
    private long _started;
    private long _finished;
    private long _from;
    private long _length;
    private ReadOnlyMemory<byte> _data;

    /// <summary>By the log's writer, before the batch's record is applied to the maps.</summary>
    public void Begin(long deviceOffset, ReadOnlyMemory<byte> batch)
    {
        lock (_lock)
        {
            _from = deviceOffset;
            _length = batch.Length;
            _data = batch;
            _started++;
        }
    }

    /// <summary>By the log's writer once the device write returned (or failed): the buffer is released.</summary>
    public void End()
    {
        lock (_lock)
        {
            _data = default;
            _finished = _started;
        }
    }

    /// <summary>Nonzero if a pending write may be in flight: pass it to <see cref="TryOverlay"/> after the read.</summary>
    public long Token
    {
        get
        {
            var finished = Volatile.Read(ref _finished);
            var started = Volatile.Read(ref _started);
            return started != finished ? started : 0;
        }
    }

    /// <summary>
    /// After a device read of <paramref name="buffer"/> at <paramref name="deviceOffset"/>, begun
    /// with <paramref name="token"/>: copies the pending write's bytes over the part it covers.
    /// False if that write covers the read and finished meanwhile: the read may have raced the
    /// device write, so read again (the device now has it).
    /// </summary>
    public bool TryOverlay(long token, long deviceOffset, Span<byte> buffer)
    {
        lock (_lock)
        {
            if (_started != token)
            {
                // Another began, so the one the token names finished (one at a time): read again.
                return false;
            }
            if (!Overlaps(deviceOffset, buffer.Length))
            {
                return true;
            }
            if (_finished >= token)
            {
                return false;
            }
            var from = Math.Max(deviceOffset, _from);
            var to = Math.Min(deviceOffset + buffer.Length, _from + _length);
            _data.Span.Slice((int)(from - _from), (int)(to - from)).CopyTo(buffer[(int)(from - deviceOffset)..]);
            return true;
        }
    }

    private bool Overlaps(long offset, int length) => offset < _from + _length && _from < offset + length;
}
