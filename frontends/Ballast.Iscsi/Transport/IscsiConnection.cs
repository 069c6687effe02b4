using System.Net;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using Ballast.Iscsi.Negotiation;
using Ballast.Iscsi.Pdu;
using Ballast.Iscsi.Scsi;
using Ballast.Iscsi.Session;
using Microsoft.Extensions.Logging;

namespace Ballast.Iscsi.Transport;

/// <summary>Ends the connection: the peer broke the protocol in a way we cannot recover from at ErrorRecoveryLevel 0.</summary>
internal sealed class ProtocolViolationException(string message) : Exception(message);

/// <summary>
/// One TCP connection: a receive loop that parses PDUs in place (login phase, then full feature
/// phase) and a sender that drains the send queue into one buffer and one send per batch. StatSN
/// is assigned by the sender, so it is in order on the wire.
/// </summary>
internal sealed partial class IscsiConnection
{
    /// <summary>During login both sides may send at most 8192 bytes per PDU (RFC 7143 §13.12 default).</summary>
    private const int LoginMaxDataSegment = 8192;
    private const int MaxLoginText = 64 * 1024;
    private const int MaxImmediateCommands = 16;

    private readonly TargetContext _target;
    private readonly Socket _socket;
    private readonly SocketReader _reader;
    private readonly ILogger _log;
    private readonly CancellationTokenSource _cts = new();
    private readonly byte[] _bhs = new byte[Bhs.Length];
    private readonly byte[] _ahs = new byte[255 * 4];
    private readonly byte[] _digest = new byte[4];
    private readonly Dictionary<uint, ScsiTask> _tasks = [];
    private readonly Stack<ScsiTask> _pool = new();
    private readonly OutQueue _out = new();
    private readonly long _startedAt = Environment.TickCount64;
    private int _ahsLength;
    private uint _nextTtt = 1;
    private int _immediateInFlight;
    private int _closed;

    public IscsiConnection(TargetContext target, Socket socket)
    {
        _target = target;
        _socket = socket;
        _reader = new SocketReader(socket);
        _log = target.Log;
        Peer = socket.RemoteEndPoint;
        Local = socket.LocalEndPoint;
        _sendBuffer = GC.AllocateUninitializedArray<byte>(SendBufferSize, pinned: true);
    }

    public EndPoint? Peer { get; }
    public EndPoint? Local { get; }
    public OperationalParameters Params { get; private set; } = new();
    public IscsiSession? Session { get; private set; }
    public bool FullFeature { get; private set; }
    public string? InitiatorName { get; private set; }
    public bool IsClosed => Volatile.Read(ref _closed) != 0;

    /// <summary>Runs the connection to its end; never throws.</summary>
    public async Task RunAsync()
    {
        var ct = _cts.Token;
        var sender = Task.Run(() => SendLoopAsync(ct), CancellationToken.None);
        try
        {
            if (await LoginPhaseAsync(ct).ConfigureAwait(false))
            {
                await FullFeaturePhaseAsync(ct).ConfigureAwait(false);
            }
        }
        catch (ProtocolViolationException e)
        {
            _log.LogWarning("iSCSI connection from {Peer} ({Initiator}): protocol error: {Reason}; closing it", Peer, InitiatorName ?? "-", e.Message);
        }
        catch (Exception e) when (e is EndOfStreamException or SocketException or ObjectDisposedException or OperationCanceledException or IOException)
        {
            if (!IsClosed && e is not EndOfStreamException)
            {
                _log.LogDebug("iSCSI connection from {Peer}: {Reason}", Peer, e.Message);
            }
        }
        catch (Exception e)
        {
            _log.LogError(e, "iSCSI connection from {Peer} failed", Peer);
        }
        finally
        {
            // Let the sender put what is queued (a logout response, a reject) on the wire first.
            _out.TryComplete();
            await Task.WhenAny(sender, Task.Delay(TimeSpan.FromSeconds(2))).ConfigureAwait(false);
            await CloseAsync().ConfigureAwait(false);
            try
            {
                await sender.ConfigureAwait(false);
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException or OperationCanceledException or IOException)
            {
            }
            await CleanupAsync().ConfigureAwait(false);
        }
    }

    /// <summary>Closes the socket (idempotent); the loops end on their own.</summary>
    public Task CloseAsync()
    {
        if (Interlocked.Exchange(ref _closed, 1) != 0)
        {
            return Task.CompletedTask;
        }
        try
        {
            _cts.Cancel();
        }
        catch (ObjectDisposedException)
        {
        }
        _out.TryComplete();
        try
        {
            _socket.Shutdown(SocketShutdown.Both);
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
        }
        _socket.Dispose();
        return Task.CompletedTask;
    }

    /// <summary>After both loops ended: wait for running commands (they hold buffers and locks), end the nexus, log out.</summary>
    private async Task CleanupAsync()
    {
        List<ScsiTask> running;
        lock (_tasks)
        {
            running = [.. _tasks.Values];
        }
        foreach (var t in running)
        {
            t.Aborted = true;
            var wait = t.WhenNotExecutingAsync();
            if (await Task.WhenAny(wait, Task.Delay(TimeSpan.FromSeconds(30))).ConfigureAwait(false) != wait)
            {
                _log.LogWarning("iSCSI connection from {Peer}: a command on LUN {Lun} did not finish in 30 s", Peer, t.Nexus?.Lun);
            }
        }
        if (Session is { } s)
        {
            _target.RemoveSession(s);
            var done = s.Describe(Peer);
            s.Detach();
            if (!s.Discovery)
            {
                // The counterpart of the NBD disconnect line: what the session did, for a post-mortem.
                _log.LogInformation("iSCSI logout: {Initiator} from {Peer} left target {Target} after {Seconds:0.0} s: {Commands} commands, {Read} bytes read, {Written} bytes written",
                    s.InitiatorName, Peer, s.TargetName, (DateTimeOffset.UtcNow - done.Since).TotalSeconds,
                    done.Luns.Sum(l => l.Commands), done.Luns.Sum(l => l.BytesRead), done.Luns.Sum(l => l.BytesWritten));
            }
        }
        _target.RemoveConnection(this);
        _cts.Dispose();
    }

    // ---- Reading PDUs ----

    /// <summary>Reads the BHS, the AHS and the header digest. Throws on a bad digest or AHS layout (the PDU boundary is lost).</summary>
    [AsyncMethodBuilder(typeof(Ballast.Engine.Async.PooledValueTaskBuilder))]
    private async ValueTask ReadHeaderAsync(CancellationToken ct)
    {
        await _reader.ReadExactAsync(_bhs, ct).ConfigureAwait(false);
        _ahsLength = Bhs.TotalAhsLength(_bhs);
        if (_ahsLength > 0)
        {
            await _reader.ReadExactAsync(_ahs.AsMemory(0, _ahsLength), ct).ConfigureAwait(false);
            ValidateAhs();
        }
        if (Params.HeaderDigest && FullFeatureDigests)
        {
            await _reader.ReadExactAsync(_digest, ct).ConfigureAwait(false);
            var crc = Digest.Update(Digest.Begin(), _bhs);
            crc = Digest.End(Digest.Update(crc, _ahs.AsSpan(0, _ahsLength)));
            if (crc != Digest.Read(_digest))
            {
                // RFC 7143 §7.8: the header cannot be trusted, so neither can the PDU boundary.
                throw new ProtocolViolationException("header digest mismatch");
            }
        }
    }

    /// <summary>Digests apply from the first PDU after the login phase (RFC 7143 §13.1).</summary>
    private bool FullFeatureDigests => FullFeature;

    /// <summary>Each AHS: 2-byte AHSLength, type, then that many bytes padded to 4 (RFC 7143 §11.2.2); they must tile TotalAHSLength exactly.</summary>
    private void ValidateAhs()
    {
        var o = 0;
        while (o < _ahsLength)
        {
            if (_ahsLength - o < 4)
            {
                throw new ProtocolViolationException("truncated AHS");
            }
            var len = (_ahs[o] << 8) | _ahs[o + 1];
            var total = (3 + len + 3) & ~3;
            if (len == 0 || total > _ahsLength - o)
            {
                throw new ProtocolViolationException($"AHS length {len} overflows TotalAHSLength {_ahsLength}");
            }
            o += total;
        }
    }

    /// <summary>
    /// Reads a data segment of <paramref name="length"/> bytes into <paramref name="destination"/>,
    /// then padding and digest; <see cref="_dataOk"/> is false on a data digest mismatch. Not a
    /// ValueTask&lt;bool&gt;: the runtime's pooling builder caches boxes per thread and missed
    /// when completions came from engine threads; this builder's pool is shared.
    /// </summary>
    [AsyncMethodBuilder(typeof(Ballast.Engine.Async.PooledValueTaskBuilder))]
    private async ValueTask ReadDataAsync(Memory<byte> destination, int length, CancellationToken ct)
    {
        _dataOk = true;
        if (length == 0)
        {
            return;
        }
        await _reader.ReadExactAsync(destination[..length], ct).ConfigureAwait(false);
        var pad = Bhs.Pad(length);
        if (pad > 0)
        {
            await _reader.ReadExactAsync(_digest.AsMemory(0, pad), ct).ConfigureAwait(false);
        }
        if (Params.DataDigest && FullFeatureDigests)
        {
            await _reader.ReadExactAsync(_digest, ct).ConfigureAwait(false);
            _dataOk = Digest.OfData(destination.Span[..length]) == Digest.Read(_digest);
        }
    }

    private bool _dataOk;

    private ValueTask SkipDataAsync(int length, CancellationToken ct) =>
        length == 0 ? default : _reader.SkipAsync(Bhs.WireDataLength(length, Params.DataDigest && FullFeatureDigests), ct);

    public long LastActivity => _reader.LastActivity;

    // ---- Tasks ----

    private ScsiTask RentTask()
    {
        lock (_pool)
        {
            if (_pool.TryPop(out var t))
            {
                return t;
            }
        }
        return new ScsiTask();
    }

    private void ReturnTask(ScsiTask t)
    {
        t.ResetForReuse();
        lock (_pool)
        {
            if (_pool.Count < 256)
            {
                _pool.Push(t);
                return;
            }
        }
        t.ReturnBuffer();
    }

    /// <summary>
    /// Called once per task when its command finished (or failed before running): hands it to the
    /// sender. Whoever takes the task out of the table owns it, so a task that an abort already
    /// took is not queued twice.
    /// </summary>
    public void OnTaskDone(ScsiTask t)
    {
        lock (_tasks)
        {
            if (!_tasks.TryGetValue(t.Itt, out var x) || x != t)
            {
                return;
            }
            _tasks.Remove(t.Itt);
        }
        if (t.Nexus is { } n)
        {
            Interlocked.Increment(ref n.Commands);
            if (t.ReadBit && t.DataInLength > 0)
            {
                Interlocked.Add(ref n.BytesRead, Math.Min((long)t.DataInLength, t.ExpectedLength));
            }
            if (t.WriteBit && t.DataOutLength > 0)
            {
                Interlocked.Add(ref n.BytesWritten, t.DataOutLength);
            }
        }
        if (t.Immediate)
        {
            Interlocked.Decrement(ref _immediateInFlight);
        }
        if (!_out.TryWrite(new OutItem(OutKind.TaskResponse, t, null, 0, 0, 0, 0)))
        {
            // Connection closed: nobody will send it; retire here.
            RetireTask(t);
        }
    }

    private void RetireTask(ScsiTask t)
    {
        if (!t.Immediate)
        {
            Session?.Retire();
        }
        ReturnTask(t);
    }

    public void LogVolumeError(ScsiTask t, Exception e)
    {
        if (e is Ballast.Engine.Volumes.BlockVolumeException b)
        {
            _log.LogWarning("iSCSI {Initiator}: {Command} on volume {Volume} at LBA {Lba} failed ({Error}): {Message}",
                InitiatorName, CommandTable.Find(t.Cdb, out _)?.Name ?? $"opcode 0x{t.Opcode:x2}", t.Nexus?.Lu.Name, t.LbaForLog(), b.Error, b.Message);
        }
        else
        {
            _log.LogError(e, "iSCSI {Initiator}: opcode 0x{Opcode:x2} on volume {Volume} at LBA {Lba} failed", InitiatorName, t.Opcode, t.Nexus?.Lu.Name, t.LbaForLog());
        }
    }

    /// <summary>Queues a control PDU; false if the connection is closing.</summary>
    private bool Send(ControlPdu pdu) => _out.TryWrite(new OutItem(OutKind.Control, null, pdu, 0, 0, 0, 0));

    private uint NextTtt()
    {
        var t = Interlocked.Increment(ref _nextTtt);
        return t is Bhs.ReservedTag or 0 ? Interlocked.Increment(ref _nextTtt) : t;
    }
}

internal sealed partial class IscsiConnection
{
    /// <summary>Target stop: wait until no command is running (bounded by <paramref name="ct"/>); new ones keep arriving until the close.</summary>
    public async Task DrainAsync(CancellationToken ct)
    {
        List<ScsiTask> running;
        lock (_tasks)
        {
            running = [.. _tasks.Values];
        }
        foreach (var t in running)
        {
            try
            {
                await t.WhenNotExecutingAsync().WaitAsync(ct).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }
}
