using Ballast.Engine.Volumes;

namespace Ballast.Daemon.Hosting;

/// <summary>
/// The volumes this node serves to clients: all of its pool's, except replicated volumes whose
/// primary is another node (their copy here may lag, and writes must go through the primary).
/// </summary>
public sealed class ServedVolumes(PoolService pool, ReplicationService replication) : IVolumeDirectory
{
    public IBlockVolume? Find(string name) => Servable(name) ? pool.Pool.Find(name) : null;

    public IReadOnlyList<VolumeListing> List() => [.. pool.Pool.List().Where(v => Servable(v.Name))];

    private bool Servable(string name) => replication.Node?.IsServable(name) ?? true;
}
