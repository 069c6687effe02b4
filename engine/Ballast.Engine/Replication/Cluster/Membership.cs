using System.Net;

namespace Ballast.Engine.Replication.Cluster;

/// <summary>A ballastd node: its id and where its replication listener is.</summary>
public sealed record NodeInfo(string Id, EndPoint Address);

/// <summary>
/// Which nodes exist. Today a static list from the config file; cluster state in etcd replaces
/// it later behind this interface.
/// </summary>
public interface IMembership
{
    string SelfId { get; }

    IReadOnlyList<NodeInfo> Nodes { get; }

    NodeInfo? Find(string id);
}

public sealed class StaticMembership(string selfId, IReadOnlyList<NodeInfo> nodes) : IMembership
{
    public string SelfId { get; } = selfId;

    public IReadOnlyList<NodeInfo> Nodes { get; } = nodes;

    public NodeInfo? Find(string id) => Nodes.FirstOrDefault(n => n.Id == id);
}
