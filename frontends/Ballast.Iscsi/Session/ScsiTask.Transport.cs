using System.Runtime.CompilerServices;
using Ballast.Engine.Volumes;
using Ballast.Iscsi.Transport;

namespace Ballast.Iscsi.Scsi;

/// <summary>The iSCSI half of a task: Data-Out bookkeeping (unsolicited data, R2T bursts) and running the command without allocating.</summary>
internal sealed partial class ScsiTask
{
    public const int MaxBursts = 16;

    private readonly Action _onHandlerCompleted;
    private ValueTask _pending;
    private TaskCompletionSource? _doneWaiter;
    private int _state; // 0 idle/receiving, 1 executing, 2 done

    public ScsiTask()
    {
        _onHandlerCompleted = OnHandlerCompleted;
    }

    public IscsiConnection? Connection;

    /// <summary>The session's LUN table (REPORT LUNS).</summary>
    public LunNexus?[]? SessionLuns;

    /// <summary>SPDTL for data-out commands when the handler knows it (-1: equal to EDTL); drives write residuals.</summary>
    public int TransferLength = -1;

    // Unsolicited data: [0, UnsolicitedEnd) may arrive as immediate data and Data-Out with TTT 0xffffffff.
    public int UnsolicitedEnd;
    public int UnsolicitedReceived;
    public uint UnsolicitedDataSn;
    public bool UnsolicitedDone;

    // Solicited data.
    public int NextR2TOffset;
    public int OutstandingR2T;
    public uint R2TSn;
    public readonly Burst[] Bursts = new Burst[MaxBursts];

    /// <summary>A Data-Out failed its digest: the command ends with CHECK CONDITION once all data is in (RFC 7143 §7.8).</summary>
    public bool DataDigestFailed;

    /// <summary>The command failed before its data arrived; Data-Out for it is read and dropped.</summary>
    public bool Discarding;

    /// <summary>Data-In PDUs sent (ExpDataSN of the response).</summary>
    public uint DataInPdus;

    public struct Burst
    {
        public bool Active;
        public uint Ttt;
        public int Offset;
        public int Length;
        public int Received;
        public uint NextDataSn;
    }

    public bool IsExecuting => Volatile.Read(ref _state) == 1;

    /// <summary>The command finished; its response is being handed to the sender.</summary>
    public bool IsDone => Volatile.Read(ref _state) == 2;

    public void ResetForReuse()
    {
        ResetScsi();
        Connection = null;
        SessionLuns = null;
        TransferLength = -1;
        UnsolicitedEnd = UnsolicitedReceived = 0;
        UnsolicitedDataSn = 0;
        UnsolicitedDone = false;
        NextR2TOffset = OutstandingR2T = 0;
        R2TSn = 0;
        Array.Clear(Bursts);
        DataDigestFailed = false;
        Discarding = false;
        DataInPdus = 0;
        _pending = default;
        _doneWaiter = null;
        _state = 0;
        // Buffers go back to the shared pool at once: a pooled task holds no data memory, so a
        // burst of large commands does not pin megabytes per connection afterwards.
        ReturnBuffer();
    }

    /// <summary>Runs the command (all its data is in). Completion enqueues the response on the connection.</summary>
    public void Start()
    {
        Volatile.Write(ref _state, 1);
        if (Aborted)
        {
            Finish();
            return;
        }
        if (DataDigestFailed)
        {
            CheckCondition(SenseKey.AbortedCommand, Asc.ProtocolServiceCrcError);
            Finish();
            return;
        }
        ValueTask vt;
        try
        {
            vt = ScsiDispatcher.Execute(this);
        }
        catch (Exception e)
        {
            AfterHandler(e);
            Finish();
            return;
        }
        if (vt.IsCompleted)
        {
            Complete(vt);
            return;
        }
        _pending = vt;
        vt.GetAwaiter().UnsafeOnCompleted(_onHandlerCompleted);
    }

    private void OnHandlerCompleted()
    {
        var vt = _pending;
        _pending = default;
        Complete(vt);
    }

    /// <summary>Takes the handler's outcome (GetResult also hands a pooled value-task source back to its owner) and finishes the command.</summary>
    private void Complete(ValueTask vt)
    {
        Exception? error = null;
        try
        {
            vt.GetAwaiter().GetResult();
        }
        catch (Exception e)
        {
            error = e;
        }
        AfterHandler(error);
        Finish();
    }

    /// <summary>Runs the command without a connection (unit tests): same checks, same error mapping.</summary>
    internal async Task RunDetachedAsync()
    {
        Exception? error = null;
        try
        {
            await ScsiDispatcher.Execute(this).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            error = e;
        }
        AfterHandler(error);
    }

    private void OnFailure(Exception e)
    {
        var write = ScsiDispatcher.IsWrite(Opcode) || Opcode == ScsiOpcodes.CompareAndWrite;
        if (e is BlockVolumeException b)
        {
            ScsiDispatcher.MapError(this, b.Error, write);
            Connection?.LogVolumeError(this, b);
        }
        else
        {
            CheckCondition(SenseKey.HardwareError, Asc.InternalTargetFailure);
            Connection?.LogVolumeError(this, e);
        }
    }

    private void Finish()
    {
        TaskCompletionSource? waiter;
        lock (this)
        {
            _state = 2;
            waiter = _doneWaiter;
        }
        waiter?.TrySetResult();
        Connection!.OnTaskDone(this);
    }

    /// <summary>For task management: completes when a running command has finished (immediately if it is not running).</summary>
    public Task WhenNotExecutingAsync()
    {
        lock (this)
        {
            if (_state != 1)
            {
                return Task.CompletedTask;
            }
            _doneWaiter ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            return _doneWaiter.Task;
        }
    }

    /// <summary>LBA of the command for error messages (0 when the CDB has none).</summary>
    public ulong LbaForLog()
    {
        try
        {
            BlockRange.Decode(this, out var lba, out _);
            return lba;
        }
        catch (IndexOutOfRangeException)
        {
            return 0;
        }
    }
}
