namespace Ballast.Engine.Volumes;

/// <summary>
/// What a frontend may export: volumes and snapshots by name. Frontends look a name up when a
/// client connects (NBD export name, iSCSI target), so volumes created or deleted while the
/// daemon runs appear and disappear without a restart.
/// </summary>
public interface IVolumeDirectory
{
    /// <summary>The volume named <paramref name="name"/>, or null if there is none.</summary>
    IBlockVolume? Find(string name);

    /// <summary>Everything that can be exported, ordered by name.</summary>
    IReadOnlyList<VolumeListing> List();
}

/// <summary>One exportable volume or snapshot, as a listing shows it.</summary>
public readonly record struct VolumeListing(string Name, long Size, bool ReadOnly, string Description);
