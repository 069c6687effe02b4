using Ballast.Engine.Log;

namespace Ballast.Engine.Replication;

/// <summary>
/// The primary's side of replication as the engine sees it: every data, zero and trim record
/// of a replicated volume is handed over when it gets its LSN, under the appender's queue lock,
/// so the order records are forwarded in is their LSN order. Implementations only enqueue.
/// </summary>
public interface IRecordForwarder
{
    /// <summary>
    /// Queues the record for every replica that should get it. The returned task completes when
    /// every in-sync replica has appended it (or was dropped from the in-sync set), and fails when
    /// fewer than the volume's minimum of copies remain. <paramref name="payload"/> stays valid
    /// until then. With <paramref name="completeInline"/> the writer's continuation may run on the
    /// thread that receives the last answer (it must be short and never block).
    /// </summary>
    ValueTask Forward(in ReplicatedRecord record, ReadOnlyMemory<byte> payload, bool completeInline);

    /// <summary>Completes when everything forwarded before it is durable on every in-sync replica.</summary>
    ValueTask FlushAsync(bool completeInline, CancellationToken ct);
}

/// <summary>What a replica needs to append a record exactly as the primary did.</summary>
public readonly record struct ReplicatedRecord(RecordKind Kind, long Lsn, uint Epoch, long Lba, int BlockCount, bool Fua);
