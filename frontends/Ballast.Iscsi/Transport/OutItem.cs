using Ballast.Iscsi.Scsi;

namespace Ballast.Iscsi.Transport;

internal enum OutKind : byte
{
    /// <summary>The task's Data-In and status (or nothing, if it was aborted); the task returns to the pool.</summary>
    TaskResponse,
    /// <summary>An R2T for the task; fields in A..D.</summary>
    ReadyToTransfer,
    /// <summary>A control PDU (login, text, NOP-In, TMF, logout, reject, async message).</summary>
    Control,
}

/// <summary>One entry of the connection's send queue. R2T values travel in the item so the sender never reads task state that may have moved on.</summary>
internal readonly record struct OutItem(OutKind Kind, ScsiTask? Task, ControlPdu? Control, uint A, uint B, int C, int D);

/// <summary>
/// A non-SCSI-data PDU to send: a 48-byte header built by the caller and an optional data
/// segment. The sender fills the sequence numbers as <see cref="Sequence"/> says.
/// </summary>
internal sealed class ControlPdu
{
    public readonly byte[] Header = new byte[Pdu.Bhs.Length];
    public byte[]? Data;
    public int DataLength;

    /// <summary>How the StatSN field is filled: take the next StatSN (a response), or show the current one without advancing.</summary>
    public StatSnUse Sequence = StatSnUse.Advance;

    /// <summary>Close the connection once this PDU is on the wire (logout response, fatal reject, failed login).</summary>
    public bool CloseAfter;

    /// <summary>The final login response: digests apply to every PDU after it.</summary>
    public bool StartFullFeature;

    /// <summary>Completed when the PDU has been written to the socket.</summary>
    public TaskCompletionSource? Sent;
}

internal enum StatSnUse : byte
{
    Advance,
    Current,
    /// <summary>Leave the header as built (login responses fill the field themselves).</summary>
    None,
}
