using System.Buffers;
using System.Diagnostics;
using System.Text;
using Ballast.Engine.Log;
using Ballast.Engine.Replication.Transport;
using Ballast.Engine.Replication.Wire;
using Ballast.Engine.Volumes;

namespace Ballast.Engine.Replication.Primary;

/// <summary>
/// Sends changed extents to one replica as resync copies. Random writes during an outage leave
/// many small extents; copied one at a time, each cost several thread wake-ups on both nodes
/// (about 100 µs of CPU per 4 KiB copy on each, measured), which starved the foreground writes
/// the rate limit was meant to protect. So copies go in groups: the group's reads start together,
/// its frames leave together and its answers are awaited together, while the previous group is
/// still on the wire. Groups stay small (16 copies): larger ones moved no more data and made
/// the foreground p99 worse (a burst of work the foreground write waits behind).
/// </summary>
internal sealed class ResyncCopy(EngineVolume volume, ReplicaTarget target, bool force, long bytesPerSecond, Action<long> copied)
{
    /// <summary>One record carries at most 1 MiB.</summary>
    private const int MaxChunkBlocks = 256;
    private const int GroupBytes = 1 << 20;
    private const int GroupChunks = 16;

    /// <summary>
    /// What one copy counts against the rate at least. A copy costs CPU of its own: even grouped,
    /// a 4 KiB copy took about 60 µs over both nodes here (17,000 a second at 64 MiB/s took half
    /// of this 2-core machine), so the rate alone does not bound what scattered extents cost.
    /// </summary>
    public const int MinChargeBytes = 8 << 10;

    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private long _charged;

    public async Task RunAsync(IReadOnlyList<ChangedExtent> pieces, CancellationToken ct)
    {
        Group filling = new(), onWire = new();
        try
        {
            foreach (var p in pieces)
            {
                var lba = p.Offset >> PoolLayout.BlockShift;
                var blocks = (p.Length + PoolLayout.BlockSize - 1) >> PoolLayout.BlockShift;
                var kind = p.State switch { AllocationState.Data => RecordKind.Data, AllocationState.Zero => RecordKind.Zero, _ => RecordKind.Trim };
                for (long done = 0; done < blocks;)
                {
                    ct.ThrowIfCancellationRequested();
                    var n = (int)Math.Min(MaxChunkBlocks, blocks - done);
                    var chunk = new Chunk(lba + done, n, kind, p.Lsn);
                    if (!filling.Fits(chunk))
                    {
                        await ShipAsync(filling).ConfigureAwait(false);
                        await onWire.FinishAsync().ConfigureAwait(false);
                        (filling, onWire) = (onWire, filling);
                        await PaceAsync(ct).ConfigureAwait(false);
                    }
                    filling.Add(chunk);
                    done += n;
                }
            }
            await ShipAsync(filling).ConfigureAwait(false);
            await onWire.FinishAsync().ConfigureAwait(false);
            await filling.FinishAsync().ConfigureAwait(false);
        }
        finally
        {
            // Frames in flight still point into the buffers: wait for every answer before returning them.
            await onWire.DrainAsync().ConfigureAwait(false);
            await filling.DrainAsync().ConfigureAwait(false);
            onWire.Dispose();
            filling.Dispose();
        }
    }

    /// <summary>Reads the group's data (all reads in flight at once), then queues its frames.</summary>
    private async Task ShipAsync(Group g)
    {
        var reads = g.Reads;
        for (var i = 0; i < g.Chunks.Count; i++)
        {
            var c = g.Chunks[i];
            if (c.Kind == RecordKind.Data)
            {
                var offset = c.Lba << PoolLayout.BlockShift;
                var bytes = c.Blocks << PoolLayout.BlockShift;
                var length = (int)Math.Clamp(volume.Size - offset, 0, bytes);
                g.Buffer.AsSpan(c.BufferOffset + length, bytes - length).Clear();
                reads.Add(length == 0 ? ValueTask.CompletedTask : volume.ReadAsync(offset, g.Buffer.AsMemory(c.BufferOffset, length)));
            }
        }
        Exception? failed = null;
        foreach (var r in reads)
        {
            try
            {
                await r.ConfigureAwait(false);
            }
            catch (Exception e)
            {
                failed ??= e;
            }
        }
        reads.Clear();
        if (failed != null)
        {
            throw new ResyncException($"resync read failed: {failed.Message}");
        }
        foreach (var c in g.Chunks)
        {
            var rh = new RecordHeader
            {
                Lsn = c.Lsn,
                Epoch = volume.Epoch,
                Lba = c.Lba,
                Blocks = c.Blocks,
                Flags = ((uint)c.Kind << 8) | (force ? RecordHeader.Force : 0),
            };
            var body = c.Kind == RecordKind.Data ? g.Buffer.AsMemory(c.BufferOffset, c.Blocks << PoolLayout.BlockShift) : default;
            g.Calls.Add(target.Link.CallAsync(new OutFrame { Type = FrameType.Resync, Volume = target.Handle, HasRecord = true, Record = rh, Body = body }));
            _charged += Math.Max(MinChargeBytes, body.Length);
            if (c.Kind == RecordKind.Data)
            {
                copied(body.Length);
            }
        }
        g.Chunks.Clear();
    }

    private async Task PaceAsync(CancellationToken ct)
    {
        var due = TimeSpan.FromSeconds((double)_charged / Math.Max(1 << 20, bytesPerSecond));
        if (due > _clock.Elapsed)
        {
            await Task.Delay(due - _clock.Elapsed, ct).ConfigureAwait(false);
        }
    }

    private readonly record struct Chunk(long Lba, int Blocks, RecordKind Kind, long Lsn, int BufferOffset = 0);

    /// <summary>Copies read and sent together; its buffer is reused once every answer arrived.</summary>
    private sealed class Group : IDisposable
    {
        public readonly byte[] Buffer = ArrayPool<byte>.Shared.Rent(GroupBytes);
        public readonly List<Chunk> Chunks = new(GroupChunks);
        public readonly List<ValueTask> Reads = new(GroupChunks);
        public readonly List<Task<(ReplicationStatus Status, byte[] Body)>> Calls = new(GroupChunks);
        public int Used;

        public bool Fits(in Chunk c) => Chunks.Count < GroupChunks && (c.Kind != RecordKind.Data || Used + (c.Blocks << PoolLayout.BlockShift) <= GroupBytes);

        public void Add(Chunk c)
        {
            if (c.Kind == RecordKind.Data)
            {
                c = c with { BufferOffset = Used };
                Used += c.Blocks << PoolLayout.BlockShift;
            }
            Chunks.Add(c);
        }

        /// <summary>
        /// Waits for every answer, then frees the group; the first refusal fails the resync (and
        /// leaves the rest to <see cref="DrainAsync"/>, which <see cref="RunAsync"/> always calls).
        /// </summary>
        public async Task FinishAsync()
        {
            foreach (var call in Calls)
            {
                var (status, body) = await call.ConfigureAwait(false);
                if (status != ReplicationStatus.Ok)
                {
                    throw new ResyncException($"resync copy refused: {status} {Encoding.UTF8.GetString(body)}");
                }
            }
            Reset();
        }

        /// <summary>Waits until no frame in flight points into the buffer, whatever the answers.</summary>
        public async Task DrainAsync()
        {
            foreach (var call in Calls)
            {
                try
                {
                    await call.ConfigureAwait(false);
                }
                catch (Exception)
                {
                    // Only waiting for the frame to leave the buffer; the failure was reported where it mattered.
                }
            }
            Reset();
        }

        private void Reset()
        {
            Calls.Clear();
            Used = 0;
        }

        public void Dispose() => ArrayPool<byte>.Shared.Return(Buffer);
    }
}
