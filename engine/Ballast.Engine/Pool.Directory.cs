using Ballast.Engine.Volumes;

namespace Ballast.Engine;

/// <summary>The pool as the frontends see it: volumes and snapshots by name.</summary>
public sealed partial class Pool : IVolumeDirectory
{
    public IBlockVolume? Find(string name) => TryOpenVolume(name, out var v) && !v.IsDeleted ? v : null;

    public IReadOnlyList<VolumeListing> List()
    {
        var list = new List<VolumeListing>();
        foreach (var v in ListVolumes())
        {
            var what = v.Kind == VolumeKind.Snapshot ? $"snapshot of {v.Parent}" : v.Parent != null ? $"clone of {v.Parent}" : "volume";
            list.Add(new VolumeListing(v.Name, v.Size, v.ReadOnly, $"Ballast {what}, {v.Size / (1024.0 * 1024 * 1024):0.##} GiB"));
        }
        list.Sort((a, b) => string.CompareOrdinal(a.Name, b.Name));
        return list;
    }
}
