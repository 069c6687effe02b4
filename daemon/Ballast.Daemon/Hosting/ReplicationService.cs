using Ballast.Daemon.Configuration;
using Ballast.Engine;
using Ballast.Engine.Replication;
using Ballast.Engine.Replication.Cluster;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Ballast.Daemon.Hosting;

/// <summary>
/// Replication on this node (when --node-id is set): the replication listener, links to peers,
/// and the primaries' replicators. Starts after the pool and before the protocol servers, so a
/// volume is never served before this node knows whether it is its primary.
/// </summary>
public sealed partial class ReplicationService(DaemonSettings settings, PoolService pool, ILogger<ReplicationService> log) : IHostedService
{
    private ReplicationNode? _node;

    /// <summary>Null on a single node.</summary>
    public ReplicationNode? Node => _node;

    /// <summary>Raised when this node stops being a volume's primary: its clients are disconnected.</summary>
    public event Action<string>? VolumeDemoted;

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        if (!settings.ReplicationEnabled)
        {
            return;
        }
        var nodes = settings.Nodes.Select(n => new NodeInfo(n.Id, n.Address)).ToList();
        _node = new ReplicationNode(pool.Pool, new ReplicationOptions
        {
            NodeId = settings.NodeId!,
            Listen = settings.ReplicationListen!,
            Membership = new StaticMembership(settings.NodeId!, nodes),
            CatalogPath = Path.Combine(settings.DataDir, "replication.json"),
            RequestTimeout = settings.ReplicaTimeout,
            ResyncBytesPerSecond = settings.ResyncRate,
            Log = (level, message) => Message(log, level switch
            {
                PoolLogLevel.Debug => LogLevel.Debug,
                PoolLogLevel.Information => LogLevel.Information,
                PoolLogLevel.Warning => LogLevel.Warning,
                _ => LogLevel.Error,
            }, message),
        });
        _node.VolumeDemoted += name => VolumeDemoted?.Invoke(name);
        await _node.StartAsync().ConfigureAwait(false);
        Started(log, settings.NodeId!, Configuration.EndpointText.Format(settings.ReplicationListen!), nodes.Count);
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (_node != null)
        {
            await _node.DisposeAsync().ConfigureAwait(false);
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "replication: node {Node} listening on {Endpoint}, {Count} node(s) in the cluster")]
    private static partial void Started(ILogger logger, string node, string endpoint, int count);

    [LoggerMessage(Message = "{Message}")]
    private static partial void Message(ILogger logger, LogLevel level, string message);
}
