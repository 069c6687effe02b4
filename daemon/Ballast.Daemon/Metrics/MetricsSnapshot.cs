using System.Diagnostics;
using Ballast.Daemon.Api;
using Ballast.Daemon.Hosting;
using Ballast.Engine.Volumes;

namespace Ballast.Daemon.Metrics;

/// <summary>One metric sample: name, labels, value, and its kind for the Prometheus TYPE line.</summary>
public sealed record Sample(string Name, string Kind, string Help, IReadOnlyList<(string Key, string Value)> Labels, double Value);

/// <summary>
/// Everything /metrics and /metrics.json report, read at request time from the engine's
/// counters, the protocol servers and the runtime. Names follow Prometheus conventions.
/// </summary>
public sealed class MetricsSnapshot(PoolService pool, ExportCatalog exports, ReplicationService replication)
{
    public IReadOnlyList<Sample> Collect()
    {
        var list = new List<Sample>();
        void Add(string name, string kind, string help, double value, params (string, string)[] labels) => list.Add(new Sample(name, kind, help, labels, value));

        foreach (var info in pool.Pool.ListVolumes().OrderBy(v => v.Name, StringComparer.Ordinal))
        {
            if (!pool.Pool.TryOpenVolume(info.Name, out var v))
            {
                continue;
            }
            var c = v.Counters;
            var l = ("volume", info.Name);
            Add("ballast_volume_size_bytes", "gauge", "Size of the volume.", info.Size, l);
            Add("ballast_volume_reads_total", "counter", "Read requests completed.", c.Reads, l);
            Add("ballast_volume_read_bytes_total", "counter", "Bytes read.", c.ReadBytes, l);
            Add("ballast_volume_writes_total", "counter", "Write requests completed.", c.Writes, l);
            Add("ballast_volume_write_bytes_total", "counter", "Bytes written.", c.WriteBytes, l);
            Add("ballast_volume_flushes_total", "counter", "Flushes completed.", c.Flushes, l);
            Add("ballast_volume_trims_total", "counter", "Trim requests completed.", c.Trims, l);
            Add("ballast_volume_trim_bytes_total", "counter", "Bytes trimmed.", c.TrimBytes, l);
            Add("ballast_volume_zeroes_total", "counter", "Write-zeroes requests completed.", c.Zeroes, l);
            Add("ballast_volume_zero_bytes_total", "counter", "Bytes zeroed.", c.ZeroBytes, l);
            Add("ballast_volume_errors_total", "counter", "Requests that ended with an error.", c.Errors, l);
            Add("ballast_volume_checksum_errors_total", "counter", "Blocks that failed their checksum when read.", c.ChecksumErrors, l);
            Add("ballast_volume_in_flight_requests", "gauge", "Requests being served now.", c.InFlight, l);
            foreach (var (op, h) in new[] { ("read", c.ReadLatency), ("write", c.WriteLatency), ("flush", c.FlushLatency), ("trim", c.TrimLatency) })
            {
                var counts = h.Snapshot();
                long cumulative = 0;
                for (var i = 0; i < LatencyHistogram.Buckets; i++)
                {
                    cumulative += counts[i];
                    var le = i == LatencyHistogram.Buckets - 1 ? "+Inf" : (LatencyHistogram.UpperBoundMicros(i) / 1e6).ToString("0.######", System.Globalization.CultureInfo.InvariantCulture);
                    Add("ballast_volume_request_duration_seconds_bucket", "histogram", "Request latency.", cumulative, l, ("op", op), ("le", le));
                }
                Add("ballast_volume_request_duration_seconds_sum", "histogram", "Request latency.", h.SumMicros / 1e6, l, ("op", op));
                Add("ballast_volume_request_duration_seconds_count", "histogram", "Request latency.", cumulative, l, ("op", op));
            }
        }

        var (nbd, iscsi) = exports.Connections();
        Add("ballast_connections", "gauge", "Clients connected to a volume: NBD connections past the handshake, iSCSI sessions logged in to a target.", nbd, ("protocol", "nbd"));
        Add("ballast_connections", "gauge", "Clients connected to a volume: NBD connections past the handshake, iSCSI sessions logged in to a target.", iscsi, ("protocol", "iscsi"));

        var s = pool.Pool.GetStats();
        Add("ballast_pool_capacity_bytes", "gauge", "Capacity of the pool.", s.CapacityBytes);
        Add("ballast_pool_used_bytes", "gauge", "Bytes in log segments (live and not yet cleaned).", s.UsedBytes);
        Add("ballast_pool_live_bytes", "gauge", "Estimated live data bytes.", s.LiveBytes);
        Add("ballast_pool_reclaimable_bytes", "gauge", "Estimated dead bytes the cleaner can reclaim.", s.ReclaimableBytes);
        Add("ballast_pool_segments", "gauge", "Segments by state.", s.FreeSegments, ("state", "free"));
        Add("ballast_pool_segments", "gauge", "Segments by state.", s.LogSegments, ("state", "log"));
        Add("ballast_pool_segments", "gauge", "Segments by state.", s.CheckpointSegments, ("state", "checkpoint"));
        Add("ballast_pool_client_write_bytes_total", "counter", "Data bytes clients wrote.", s.ClientBytesWritten);
        Add("ballast_pool_device_write_bytes_total", "counter", "Bytes written to the device (data, headers, cleaner copies, checkpoints).", s.DeviceBytesWritten);
        Add("ballast_pool_write_amplification", "gauge", "Device bytes written per client byte.", s.WriteAmplification);
        Add("ballast_pool_batches_total", "counter", "Group-commit batches written.", s.Batches);
        Add("ballast_pool_inline_batches_total", "counter", "Batches written on a client's own thread: a write alone on its connection, or a replica's records from one read, that found the log idle.", s.InlineBatches);
        Add("ballast_pool_early_acks_total", "counter", "Lone writes without FUA acknowledged before their device write, which followed the reply (a FLUSH still waits for it).", s.EarlyAcks);
        Add("ballast_pool_borrowed_bytes_total", "counter", "Large write payloads the log wrote to the device from the client's buffer, without copying them into its batch.", s.BorrowedBytes);
        Add("ballast_pool_syncs_total", "counter", "fdatasync calls.", s.Syncs);
        var times = pool.Pool.AppenderTimes;
        Add("ballast_pool_appender_busy_seconds_total", "counter", "Time the log appender spent building and writing batches (near the elapsed time: the log is the bottleneck).", times.Busy.TotalSeconds);
        Add("ballast_pool_log_write_seconds_total", "counter", "Time spent in the device writes of log batches.", times.Write.TotalSeconds);
        Add("ballast_pool_sync_seconds_total", "counter", "Time spent in fdatasync.", times.Sync.TotalSeconds);
        Add("ballast_pool_checkpoints_total", "counter", "Checkpoints written.", s.Checkpoints);
        Add("ballast_pool_healthy", "gauge", "1 while the pool accepts writes (0 after a device error).", s.Poisoned ? 0 : 1);
        Add("ballast_cleaner_passes_total", "counter", "Cleaner passes.", s.CleanerPasses);
        Add("ballast_cleaner_segments_freed_total", "counter", "Segments the cleaner freed.", s.CleanerSegmentsFreed);
        Add("ballast_cleaner_moved_bytes_total", "counter", "Live bytes the cleaner copied forward.", s.CleanerBytesMoved);
        Add("ballast_writes_waited_for_space_total", "counter", "Writes that waited for the cleaner because no segment was free above the reserve.", s.WritesWaitedForSpace);
        Add("ballast_recycled_blocks_written_total", "counter", "Client blocks written into dead blocks of older segments (slack-space recycling, near a full pool).", s.RecycledBlocksWritten);
        Add("ballast_pool_prepared_bytes_total", "counter", "Zeroes written into never-written free space just ahead of the log, so its syncs need no journal commit (once per segment).", s.PreparedBytesZeroed);
        Add("ballast_pool_prepared_free_segments", "gauge", "Free segments already written, ready for the log.", s.PreparedFreeSegments);
        Add("ballast_cleaner_reads_total", "counter", "Device reads the cleaner made to copy live data (nearby pieces are read together).", s.CleanerReads);

        if (replication.Node is { } node)
        {
            Add("ballast_replication_replica_failures_total", "counter", "Times a replica was taken out of sync (error or timeout).", node.ReplicaFailures);
            Add("ballast_replication_resync_bytes_total", "counter", "Bytes copied to replicas by resyncs.", node.ResyncBytes);
            foreach (var info in node.Catalog.All.Where(i => i.Role == Ballast.Engine.Replication.Cluster.ReplicaRole.Primary))
            {
                foreach (var r in node.Describe(info.Name) ?? [])
                {
                    if (r.Role == "replica")
                    {
                        Add("ballast_replica_in_sync", "gauge", "1 if the replica holds every acknowledged write.", r.State == "in-sync" ? 1 : 0, ("volume", info.Name), ("node", r.Node));
                        Add("ballast_replica_lag_lsn", "gauge", "Records the replica is behind the primary.", r.Lag, ("volume", info.Name), ("node", r.Node));
                    }
                }
            }
        }

        Add("ballast_large_buffers_idle_bytes", "gauge", "Aligned buffers for large NBD payloads kept for reuse (those idle for 30 s are freed).", Ballast.Engine.Buffers.LargeBufferPool.Shared.IdleBytes);

        using var self = Process.GetCurrentProcess();
        Add("process_resident_memory_bytes", "gauge", "Resident memory.", self.WorkingSet64);
        Add("process_cpu_seconds_total", "counter", "CPU time used.", self.TotalProcessorTime.TotalSeconds);
        Add("ballast_gc_heap_bytes", "gauge", "Managed heap size.", GC.GetTotalMemory(false));
        Add("ballast_gc_allocated_bytes_total", "counter", "Bytes allocated on the managed heap.", GC.GetTotalAllocatedBytes(false));
        for (var g = 0; g <= GC.MaxGeneration; g++)
        {
            Add("ballast_gc_collections_total", "counter", "Garbage collections by generation.", GC.CollectionCount(g), ("generation", g.ToString(System.Globalization.CultureInfo.InvariantCulture)));
        }
        return list;
    }
}
