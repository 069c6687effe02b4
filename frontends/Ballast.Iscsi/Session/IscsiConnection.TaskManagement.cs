using Ballast.Iscsi.Pdu;
using Ballast.Iscsi.Scsi;
using Microsoft.Extensions.Logging;

namespace Ballast.Iscsi.Transport;

/// <summary>
/// Task management (RFC 7143 §11.5, SAM-5 §7): ABORT TASK, ABORT TASK SET, LOGICAL UNIT RESET and
/// TARGET WARM RESET. An aborted command that is running is allowed to finish (engine I/O is not
/// interruptible) but its response is dropped, and the TMF response waits for it, so nothing of
/// the aborted task reaches the initiator after "function complete".
/// </summary>
internal sealed partial class IscsiConnection
{
    private void OnTaskManagement()
    {
        var h = _bhs;
        var function = (TmfFunction)(h[Bhs.FlagsByte] & Bhs.FunctionMask);
        var itt = Bhs.Itt(h);
        var refTag = Bhs.U32(h, Bhs.ReferencedTaskTagOffset);
        var refCmdSn = Bhs.U32(h, Bhs.RefCmdSnOffset);
        var lunField = Bhs.Lun(h);
        if (!Bhs.IsImmediate(h))
        {
            if (!AcceptCmdSn(false, Bhs.U32(h, Bhs.CmdSnOffset)))
            {
                return;
            }
            Session!.Retire();
        }
        var session = Session!;
        var lun = LunAddress.Decode(lunField);
        var nexus = lun >= 0 && lun < session.Luns.Length ? session.Luns[lun] : null;
        List<ScsiTask> waits = [];
        TmfResponse response;
        var coldReset = false;
        switch (function)
        {
            case TmfFunction.AbortTask:
                lock (_tasks)
                {
                    if (_tasks.TryGetValue(refTag, out var t) && AbortLocked(t, waits))
                    {
                        response = TmfResponse.FunctionComplete;
                    }
                    else if (t != null)
                    {
                        // Finished; its response is on the way.
                        response = TmfResponse.TaskDoesNotExist;
                    }
                    else if (session.InWindow(refCmdSn))
                    {
                        // Not received yet (RFC 7143 §11.5.1): the command counts as received and aborted; if it still comes it is ignored.
                        if (refCmdSn == session.ExpCmdSn)
                        {
                            session.Accept(refCmdSn);
                            session.Retire();
                        }
                        response = TmfResponse.FunctionComplete;
                    }
                    else
                    {
                        // Received and already completed: nothing to abort.
                        response = TmfResponse.TaskDoesNotExist;
                    }
                }
                break;
            case TmfFunction.AbortTaskSet:
                if (nexus is null)
                {
                    response = TmfResponse.LunDoesNotExist;
                    break;
                }
                lock (_tasks)
                {
                    foreach (var t in _tasks.Values.ToArray()) // a copy: aborting may remove entries
                    {
                        if (t.Nexus == nexus)
                        {
                            _ = AbortLocked(t, waits);
                        }
                    }
                }
                response = TmfResponse.FunctionComplete;
                break;
            case TmfFunction.LogicalUnitReset:
                if (nexus is null)
                {
                    response = TmfResponse.LunDoesNotExist;
                    break;
                }
                ResetLogicalUnit(nexus.Lu, Asc.BusDeviceResetFunctionOccurred, waits);
                response = TmfResponse.FunctionComplete;
                break;
            case TmfFunction.TargetWarmReset:
                foreach (var n in session.Luns)
                {
                    if (n != null)
                    {
                        ResetLogicalUnit(n.Lu, Asc.PowerOnResetOrBusDeviceResetOccurred, waits);
                    }
                }
                response = TmfResponse.FunctionComplete;
                break;
            case TmfFunction.TargetColdReset:
                // A warm reset, then every connection to this target closes (RFC 7143 §11.5.1) once the response is out.
                foreach (var n in session.Luns)
                {
                    if (n != null)
                    {
                        ResetLogicalUnit(n.Lu, Asc.PowerOnResetOrBusDeviceResetOccurred, waits);
                    }
                }
                response = TmfResponse.FunctionComplete;
                coldReset = true;
                break;
            case TmfFunction.TaskReassign:
                response = TmfResponse.TaskAllegianceReassignmentNotSupported;
                break;
            default:
                response = TmfResponse.NotSupported;
                break;
        }
        _log.LogDebug("iSCSI {Initiator}: task management {Function} on LUN {Lun}: {Response}", InitiatorName, function, lun, response);
        _ = RespondTmfAsync(itt, response, waits, coldReset ? session.TargetName : null);
    }

    /// <summary>
    /// Marks a task aborted; a task still waiting for its data is dropped at once. False when it
    /// already finished (its response stands). Caller holds the task table lock, which a finishing
    /// task needs to hand itself to the sender, so the outcome cannot change underneath.
    /// </summary>
    private bool AbortLocked(ScsiTask t, List<ScsiTask> waits, bool fromOwnReceiveLoop = true)
    {
        if (t.IsDone)
        {
            return false;
        }
        t.Aborted = true;
        if (t.IsExecuting)
        {
            waits.Add(t);
        }
        else if (fromOwnReceiveLoop && t.WriteBit)
        {
            // Waiting for Data-Out: it never starts; the sender retires it. (Only this connection's
            // receive loop starts its tasks, so only it may drop one; an abort from another
            // session leaves it marked, and it ends without a response once its data is in.)
            _tasks.Remove(t.Itt);
            if (t.Immediate)
            {
                Interlocked.Decrement(ref _immediateInFlight);
            }
            _out.TryWrite(new OutItem(OutKind.TaskResponse, t, null, 0, 0, 0, 0));
        }
        return true;
    }

    /// <summary>Aborts the tasks of one LU on this connection (for a reset coming from any session).</summary>
    public void AbortTasksOf(LogicalUnit lu, List<ScsiTask> waits, bool fromOwnReceiveLoop)
    {
        lock (_tasks)
        {
            foreach (var t in _tasks.Values.ToArray()) // a copy: aborting may remove entries
            {
                if (t.Nexus?.Lu == lu)
                {
                    _ = AbortLocked(t, waits, fromOwnReceiveLoop);
                }
            }
        }
    }

    /// <summary>
    /// LOGICAL UNIT RESET (SAM-5 §7.7): abort every task on the LU from every session, drop the
    /// SPC-2 reservation and PREVENT state, restore default mode parameters, and raise a unit
    /// attention on every I_T nexus. Persistent reservations survive (SPC-4 §5.13.1).
    /// </summary>
    private void ResetLogicalUnit(LogicalUnit lu, Asc asc, List<ScsiTask> waits)
    {
        foreach (var c in _target.Connections())
        {
            c.AbortTasksOf(lu, waits, c == this);
        }
        lu.Reservations.ReleaseLegacy();
        foreach (var n in lu.Nexuses())
        {
            n.PreventRemoval = false;
        }
        lu.Mode.WriteCacheEnabled = true;
        lu.Mode.DescriptorSense = false;
        lu.Mode.SoftwareWriteProtect = false;
        // SAM-5 §6.3.2: a reset sets the unit attention on every I_T nexus, the requester's included.
        lu.UnitAttentionToAll(asc);
        _log.LogInformation("iSCSI {Initiator}: reset of LU {Volume}", InitiatorName, lu.Name);
    }

    private async Task RespondTmfAsync(uint itt, TmfResponse response, List<ScsiTask> waits, string? closeTarget)
    {
        foreach (var t in waits)
        {
            await t.WhenNotExecutingAsync().ConfigureAwait(false);
        }
        var pdu = new ControlPdu();
        Bhs.Init(pdu.Header, Opcode.TaskManagementResponse, Bhs.FinalBit, 0);
        pdu.Header[Bhs.ResponseByte] = (byte)response;
        Bhs.SetU32(pdu.Header, Bhs.InitiatorTaskTagOffset, itt);
        if (closeTarget is null)
        {
            Send(pdu);
            return;
        }
        pdu.Sent = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        if (Send(pdu))
        {
            await Task.WhenAny(pdu.Sent.Task, Task.Delay(TimeSpan.FromSeconds(5))).ConfigureAwait(false);
        }
        foreach (var s in _target.Sessions())
        {
            if (s.TargetName == closeTarget)
            {
                _ = s.Connection?.CloseAsync();
            }
        }
    }
}
