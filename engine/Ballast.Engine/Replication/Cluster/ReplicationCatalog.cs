using System.Text.Json;

namespace Ballast.Engine.Replication.Cluster;

public enum ReplicaRole
{
    Primary,
    Replica,
}

/// <summary>What one node knows about one replicated volume.</summary>
public sealed record ReplicatedVolumeInfo
{
    public required string Name { get; init; }
    public required Guid Uid { get; init; }
    public required ReplicaRole Role { get; init; }
    public required string Primary { get; init; }
    public required IReadOnlyList<string> Replicas { get; init; }
    public required int MinReplicas { get; init; }
    public uint Epoch { get; init; }
    /// <summary>First LSN of the current epoch (the new primary jumps ahead of every LSN an older primary may have used).</summary>
    public long EpochStartLsn { get; init; }
    /// <summary>Set on a replica while a resync is running: it is complete only up to this LSN.</summary>
    public long? ResyncFrom { get; init; }
    /// <summary>Epochs this node started as primary, with the LSN it held when it did (where other copies may diverge).</summary>
    public IReadOnlyList<EpochStart> EpochHistory { get; init; } = [];

    /// <summary>
    /// The last LSN a copy last at <paramref name="epoch"/> surely shares with this primary: what this
    /// node held when the first later epoch began. Anything the copy has beyond it may be divergent.
    /// </summary>
    public long DivergencePoint(uint epoch) =>
        EpochHistory.Where(e => e.Epoch > epoch).OrderBy(e => e.Epoch).Select(e => (long?)e.BaseLsn).FirstOrDefault() ?? 0;

    public ReplicatedVolumeInfo WithEpoch(uint epoch, long baseLsn, long startLsn) => this with
    {
        Epoch = epoch,
        EpochStartLsn = startLsn,
        EpochHistory = [.. EpochHistory.Where(e => e.Epoch < epoch), new EpochStart(epoch, baseLsn, startLsn)],
    };
}

/// <summary>An epoch this node began as primary: the LSN it held then, and the first LSN of the epoch.</summary>
public sealed record EpochStart(uint Epoch, long BaseLsn, long StartLsn);

/// <summary>
/// The node's replication state, one JSON file in the data directory, replaced atomically
/// (write, fsync, rename, fsync the directory) on every change.
/// </summary>
public sealed class ReplicationCatalog
{
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web) { WriteIndented = true };
    private readonly string _path;
    private readonly object _lock = new();
    private Dictionary<string, ReplicatedVolumeInfo> _volumes;

    private ReplicationCatalog(string path, Dictionary<string, ReplicatedVolumeInfo> volumes)
    {
        _path = path;
        _volumes = volumes;
    }

    public static ReplicationCatalog Load(string path)
    {
        if (!File.Exists(path))
        {
            return new ReplicationCatalog(path, new(StringComparer.Ordinal));
        }
        try
        {
            var list = JsonSerializer.Deserialize<List<ReplicatedVolumeInfo>>(File.ReadAllText(path), Json) ?? [];
            return new ReplicationCatalog(path, list.ToDictionary(v => v.Name, StringComparer.Ordinal));
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"replication state {path} is damaged: {e.Message}", e);
        }
    }

    public ReplicatedVolumeInfo? Get(string name)
    {
        lock (_lock)
        {
            return _volumes.GetValueOrDefault(name);
        }
    }

    public IReadOnlyList<ReplicatedVolumeInfo> All
    {
        get
        {
            lock (_lock)
            {
                return [.. _volumes.Values];
            }
        }
    }

    /// <summary>Stores (or with null removes) one volume's entry durably before returning.</summary>
    public void Set(string name, ReplicatedVolumeInfo? info)
    {
        lock (_lock)
        {
            var next = new Dictionary<string, ReplicatedVolumeInfo>(_volumes, StringComparer.Ordinal);
            if (info == null)
            {
                next.Remove(name);
            }
            else
            {
                next[name] = info;
            }
            Save(next);
            _volumes = next;
        }
    }

    public void Update(string name, Func<ReplicatedVolumeInfo, ReplicatedVolumeInfo> change)
    {
        lock (_lock)
        {
            if (_volumes.TryGetValue(name, out var cur))
            {
                Set(name, change(cur));
            }
        }
    }

    private void Save(Dictionary<string, ReplicatedVolumeInfo> volumes)
    {
        var tmp = _path + ".tmp";
        using (var f = new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None))
        {
            JsonSerializer.Serialize(f, volumes.Values.OrderBy(v => v.Name, StringComparer.Ordinal).ToList(), Json);
            f.Flush(flushToDisk: true);
        }
        File.Move(tmp, _path, overwrite: true);
        // A rename is durable only once the directory entry is.
        Interop.UnixFiles.SyncDirectory(Path.GetDirectoryName(Path.GetFullPath(_path))!);
    }
}
