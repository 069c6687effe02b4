using Ballast.Engine.Log;
using Ballast.Engine.Volumes;

namespace Ballast.Engine;

/// <summary>
/// Volume lifecycle. Every change is a log record written durably (FUA) and applied on the
/// appender thread in log order, so a snapshot freezes exactly the writes logged before it.
/// </summary>
public sealed partial class Pool
{
    public const long MaxVolumeSize = 1L << 50;

    public IReadOnlyList<VolumeInfo> ListVolumes() => [.. _catalog.All().Select(Describe)];

    public VolumeInfo Describe(string name) => Describe(FindState(name));

    private VolumeInfo Describe(VolumeState v)
    {
        string? parent = null;
        if (v.Meta.ParentId != 0 && _catalog.TryGet(v.Meta.ParentId, out var p))
        {
            parent = p.Name;
        }
        var snaps = new List<string>();
        foreach (var id in v.Snapshots.ToArray())
        {
            if (_catalog.TryGet(id, out var s))
            {
                snaps.Add(s.Name);
            }
        }
        return new VolumeInfo(v.Name, v.Meta.Kind, v.Meta.Uid, Volatile.Read(ref v.Size), v.Meta.LogicalBlockSize, v.IsReadOnly, parent,
            DateTimeOffset.FromUnixTimeMilliseconds(v.Meta.CreatedUnixMs), Volatile.Read(ref v.AppliedLsn), v.Epoch, snaps);
    }

    public bool TryOpenVolume(string name, out EngineVolume volume)
    {
        if (_catalog.TryGet(name, out var state))
        {
            volume = new EngineVolume(this, state);
            return true;
        }
        volume = null!;
        return false;
    }

    public EngineVolume OpenVolume(string name) => new(this, FindState(name));

    private VolumeState FindState(string name) => _catalog.TryGet(name, out var v)
        ? v
        : throw new VolumeNotFoundException(name);

    /// <summary>Creates a thin volume: no space is used until it is written.</summary>
    public async Task<EngineVolume> CreateVolumeAsync(string name, long size, int logicalBlockSize = 4096, bool readOnly = false, Guid? uid = null)
    {
        if (VolumeCatalog.CheckName(name) is { } bad)
        {
            throw new ArgumentException(bad, nameof(name));
        }
        CheckSize(size, logicalBlockSize);
        await _structure.WaitAsync().ConfigureAwait(false);
        try
        {
            if (_catalog.NameTaken(name))
            {
                throw new VolumeExistsException(name);
            }
            var meta = new VolumeMeta
            {
                Id = _catalog.AllocateId(),
                Kind = VolumeKind.Volume,
                Name = name,
                // A replica's copy keeps the primary's identity (SCSI identifiers follow it).
                Uid = uid ?? Guid.NewGuid(),
                Size = size,
                LogicalBlockSize = logicalBlockSize,
                Flags = readOnly ? VolumeFlags.ReadOnly : VolumeFlags.None,
                CreatedUnixMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds(),
            };
            await LogMetadataAsync(RecordKind.VolumeCreate, null, meta.Id, meta.Encode(), 0, _ => _catalog.ApplyCreate(meta)).ConfigureAwait(false);
            return OpenVolume(name);
        }
        finally
        {
            _structure.Release();
        }
    }

    /// <summary>
    /// Changes a volume's size. Shrinking is refused while data lies beyond the new end, unless
    /// <paramref name="force"/> (then that data is dropped).
    /// </summary>
    public async Task ResizeVolumeAsync(string name, long newSize, bool force = false)
    {
        await _structure.WaitAsync().ConfigureAwait(false);
        try
        {
            var v = FindState(name);
            if (v.IsSnapshot)
            {
                throw new InvalidOperationException($"{name} is a snapshot; snapshots cannot be resized");
            }
            CheckSize(newSize, v.Meta.LogicalBlockSize);
            var volume = new EngineVolume(this, v);
            if (newSize < v.Size && !force && await volume.HasDataFromAsync(newSize).ConfigureAwait(false))
            {
                throw new InvalidOperationException(FormattableString.Invariant($"volume {name} holds data beyond its new size of {newSize} bytes ({newSize / (1024.0 * 1024):0.##} MiB); shrinking would destroy it (resize with --force to shrink anyway)"));
            }
            await volume.ResizeAsync(newSize, () => LogMetadataAsync(RecordKind.VolumeResize, v, v.Id, null, newSize, r => VolumeCatalog.ApplyResize(v, newSize, r.Desc.Lsn))).ConfigureAwait(false);
        }
        finally
        {
            _structure.Release();
        }
    }

    /// <summary>Deletes a volume (refused while it has snapshots unless <paramref name="withSnapshots"/>) or a snapshot.</summary>
    public async Task DeleteVolumeAsync(string name, bool withSnapshots = false)
    {
        await _structure.WaitAsync().ConfigureAwait(false);
        try
        {
            var v = FindState(name);
            var snaps = v.Snapshots.ToArray();
            if (snaps.Length > 0 && !withSnapshots)
            {
                throw new InvalidOperationException($"volume {name} has {snaps.Length} snapshot(s); delete them first or delete with its snapshots");
            }
            foreach (var id in snaps)
            {
                await LogMetadataAsync(RecordKind.VolumeDelete, null, id, null, 0, _ => _catalog.ApplyDelete(id)).ConfigureAwait(false);
            }
            await LogMetadataAsync(RecordKind.VolumeDelete, null, v.Id, null, 0, _ => _catalog.ApplyDelete(v.Id)).ConfigureAwait(false);
            Report(PoolLogLevel.Information, $"deleted {(v.IsSnapshot ? "snapshot" : "volume")} {name}; its space is reclaimed by the cleaner");
        }
        finally
        {
            _structure.Release();
        }
    }

    /// <summary>Takes a read-only, O(1) snapshot named "volume@snapshot".</summary>
    public async Task<EngineVolume> CreateSnapshotAsync(string volume, string snapshot)
    {
        if (VolumeCatalog.CheckName(snapshot) is { } bad)
        {
            throw new ArgumentException(bad, nameof(snapshot));
        }
        await _structure.WaitAsync().ConfigureAwait(false);
        try
        {
            var v = FindState(volume);
            if (v.IsSnapshot)
            {
                throw new InvalidOperationException($"{volume} is a snapshot; take snapshots of volumes");
            }
            var full = $"{volume}@{snapshot}";
            if (_catalog.NameTaken(full))
            {
                throw new VolumeExistsException(full);
            }
            var meta = new VolumeMeta
            {
                Id = _catalog.AllocateId(),
                Kind = VolumeKind.Snapshot,
                Name = full,
                ParentId = v.Id,
                Uid = Guid.NewGuid(),
                Size = v.Size,
                LogicalBlockSize = v.Meta.LogicalBlockSize,
                Flags = VolumeFlags.ReadOnly,
                CreatedUnixMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds(),
            };
            await LogMetadataAsync(RecordKind.SnapshotCreate, v, v.Id, meta.Encode(), 0, r => _catalog.ApplySnapshot(v, meta, r.Desc.Lsn)).ConfigureAwait(false);
            return OpenVolume(full);
        }
        finally
        {
            _structure.Release();
        }
    }

    /// <summary>Creates a writable volume that starts as a copy of a snapshot, in O(1).</summary>
    public async Task<EngineVolume> CloneAsync(string snapshot, string name)
    {
        if (VolumeCatalog.CheckName(name) is { } bad)
        {
            throw new ArgumentException(bad, nameof(name));
        }
        await _structure.WaitAsync().ConfigureAwait(false);
        try
        {
            var s = FindState(snapshot);
            if (!s.IsSnapshot)
            {
                throw new InvalidOperationException($"{snapshot} is not a snapshot; clones start from a snapshot (volume@snapshot)");
            }
            if (_catalog.NameTaken(name))
            {
                throw new VolumeExistsException(name);
            }
            var meta = new VolumeMeta
            {
                Id = _catalog.AllocateId(),
                Kind = VolumeKind.Volume,
                Name = name,
                ParentId = s.Id,
                Uid = Guid.NewGuid(),
                Size = s.Size,
                LogicalBlockSize = s.Meta.LogicalBlockSize,
                CreatedUnixMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds(),
                BaseLsn = s.AppliedLsn,
            };
            await LogMetadataAsync(RecordKind.VolumeCreate, null, meta.Id, meta.Encode(), 0, _ => _catalog.ApplyCreate(meta)).ConfigureAwait(false);
            return OpenVolume(name);
        }
        finally
        {
            _structure.Release();
        }
    }

    /// <summary>Sets the volume's attachment epoch (fencing for replication); records carry it from then on.</summary>
    public async Task SetEpochAsync(string name, uint epoch)
    {
        await _structure.WaitAsync().ConfigureAwait(false);
        try
        {
            var v = FindState(name);
            await LogMetadataAsync(RecordKind.EpochSet, v, v.Id, null, epoch, r => VolumeCatalog.ApplyEpoch(v, epoch, r.Desc.Lsn)).ConfigureAwait(false);
        }
        finally
        {
            _structure.Release();
        }
    }

    private async Task LogMetadataAsync(RecordKind kind, VolumeState? volume, uint volumeId, byte[]? inline, long aux, Action<AppendRequest> apply)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        var r = Appender.Rent();
        r.Desc.Kind = kind;
        r.Desc.Flags = RecordFlags.Fua;
        r.Desc.VolumeId = volumeId;
        r.Desc.Aux = aux;
        r.Volume = volume;
        r.Inline = inline;
        r.UseReserve = true;
        r.Apply = apply;
        try
        {
            await Appender.SubmitAsync(r).ConfigureAwait(false);
        }
        finally
        {
            Appender.Return(r);
        }
    }

    private static void CheckSize(long size, int logicalBlockSize)
    {
        if (logicalBlockSize is not (512 or 4096))
        {
            throw new ArgumentOutOfRangeException(nameof(logicalBlockSize), logicalBlockSize, "logical block size must be 512 or 4096");
        }
        if (size <= 0 || size > MaxVolumeSize || size % logicalBlockSize != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(size), size, $"size must be a positive multiple of {logicalBlockSize} bytes, at most {MaxVolumeSize} (1 PiB)");
        }
    }
}

public sealed class VolumeNotFoundException(string name) : KeyNotFoundException($"volume \"{name}\" not found")
{
    public string Name { get; } = name;
}

public sealed class VolumeExistsException(string name) : InvalidOperationException($"a volume or snapshot named \"{name}\" already exists")
{
    public string Name { get; } = name;
}
