using System.Text.RegularExpressions;
using Ballast.Engine.Log;
using Ballast.Engine.Maps;

namespace Ballast.Engine.Volumes;

/// <summary>
/// Volumes and snapshots by id and name, and the metadata changes the log records. The same
/// Apply* methods run on the appender thread (live) and during replay, so both paths build the
/// same state. Snapshots are named "volume@snapshot".
/// </summary>
internal sealed partial class VolumeCatalog
{
    private readonly object _lock = new();
    private readonly Dictionary<uint, VolumeState> _byId = [];
    private readonly Dictionary<string, VolumeState> _byName = new(StringComparer.Ordinal);
    private readonly MapGeometry _geometry;

    public VolumeCatalog(MapGeometry geometry, uint nextId)
    {
        _geometry = geometry;
        NextId = nextId;
    }

    public uint NextId { get; private set; }

    [GeneratedRegex("^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    private static partial Regex NamePattern();

    public static string? CheckName(string name) => NamePattern().IsMatch(name)
        ? null
        : $"invalid name \"{name}\": use 1-64 characters from A-Z a-z 0-9 . _ - starting with a letter or digit";

    public uint AllocateId()
    {
        lock (_lock)
        {
            return NextId++;
        }
    }

    public void Load(IEnumerable<VolumeState> volumes)
    {
        lock (_lock)
        {
            foreach (var v in volumes)
            {
                _byId[v.Id] = v;
                _byName[v.Name] = v;
            }
        }
    }

    public bool TryGet(string name, out VolumeState state)
    {
        lock (_lock)
        {
            return _byName.TryGetValue(name, out state!);
        }
    }

    public bool TryGet(uint id, out VolumeState state)
    {
        lock (_lock)
        {
            return _byId.TryGetValue(id, out state!);
        }
    }

    public bool NameTaken(string name)
    {
        lock (_lock)
        {
            return _byName.ContainsKey(name);
        }
    }

    public List<VolumeState> All()
    {
        lock (_lock)
        {
            return [.. _byId.Values.OrderBy(v => v.Id)];
        }
    }

    public int Count
    {
        get
        {
            lock (_lock)
            {
                return _byId.Count;
            }
        }
    }

    /// <summary>A volume or clone comes into being (clones share their snapshot's map).</summary>
    public VolumeState? ApplyCreate(VolumeMeta meta)
    {
        lock (_lock)
        {
            if (_byId.ContainsKey(meta.Id))
            {
                return null;
            }
            NextId = Math.Max(NextId, meta.Id + 1);
            ExtentMap map;
            if (meta.ParentId != 0 && _byId.TryGetValue(meta.ParentId, out var origin) && origin.IsSnapshot)
            {
                map = origin.Map.CreateClone();
            }
            else
            {
                map = new ExtentMap(_geometry, 0);
            }
            map.EnsureCapacity(Blocks(meta.Size));
            var state = new VolumeState(meta, map);
            _byId[meta.Id] = state;
            _byName[meta.Name] = state;
            return state;
        }
    }

    /// <summary>Freezes <paramref name="volume"/>'s map as snapshot <paramref name="meta"/> at LSN <paramref name="lsn"/>.</summary>
    public VolumeState? ApplySnapshot(VolumeState volume, VolumeMeta meta, long lsn)
    {
        lock (_lock)
        {
            if (_byId.ContainsKey(meta.Id))
            {
                return null;
            }
            NextId = Math.Max(NextId, meta.Id + 1);
            ExtentMap frozen;
            lock (volume.Lock)
            {
                frozen = volume.Map.FreezeSnapshot();
                volume.AppliedLsn = Math.Max(volume.AppliedLsn, lsn);
            }
            var snap = new VolumeState(meta with { BaseLsn = lsn, Size = volume.Size }, frozen);
            _byId[meta.Id] = snap;
            _byName[meta.Name] = snap;
            volume.Snapshots.Add(meta.Id);
            return snap;
        }
    }

    public static void ApplyResize(VolumeState volume, long newSize, long lsn)
    {
        lock (volume.Lock)
        {
            var blocks = Blocks(newSize);
            volume.Map.EnsureCapacity(blocks);
            if (newSize < volume.Size)
            {
                volume.Map.Truncate(blocks);
            }
            volume.Size = newSize;
            volume.AppliedLsn = Math.Max(volume.AppliedLsn, lsn);
        }
    }

    public static void ApplyEpoch(VolumeState volume, uint epoch, long lsn)
    {
        lock (volume.Lock)
        {
            volume.Epoch = epoch;
            volume.AppliedLsn = Math.Max(volume.AppliedLsn, lsn);
        }
    }

    public void ApplyDelete(uint id)
    {
        lock (_lock)
        {
            if (!_byId.Remove(id, out var v))
            {
                return;
            }
            _byName.Remove(v.Name);
            v.Deleted = true;
            if (v.IsSnapshot && _byId.TryGetValue(v.Meta.ParentId, out var parent))
            {
                parent.Snapshots.Remove(id);
            }
        }
    }

    public static long Blocks(long bytes) => (bytes + PoolLayout.BlockSize - 1) >> PoolLayout.BlockShift;
}
