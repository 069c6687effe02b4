using System.Net;
using Ballast.Nbd;
using Microsoft.Extensions.Logging;

namespace Ballast.Daemon.Configuration;

/// <summary>A volume ballastd creates at start if it does not exist yet (--volume NAME:SIZE[:BLOCKSIZE]).</summary>
public sealed record VolumeSpec(string Name, long Size, int BlockSize);

/// <summary>Everything ballastd is configured with, after defaults, the config file and the command line.</summary>
public sealed class DaemonSettings
{
    public string DataDir { get; set; } = DefaultDataDir();

    /// <summary>Capacity of a new pool in bytes; 0 takes 90% of the free space of the data directory's filesystem (at most 4 TiB).</summary>
    public long PoolSize { get; set; }

    /// <summary>Free space kept written with zeroes ahead of the log (PoolOptions.PrepareAheadBytes); 0 turns it off.</summary>
    public long PoolPrepareAhead { get; set; } = 256L << 20;

    public List<EndPoint> NbdListen { get; set; } = [new IPEndPoint(IPAddress.Loopback, NbdServerOptions.DefaultPort)];
    public string? NbdDefaultExport { get; set; }
    public NbdTlsMode NbdTls { get; set; } = NbdTlsMode.Off;
    public string? NbdTlsCertificate { get; set; }
    public string? NbdTlsKey { get; set; }
    public int NbdMaxConnections { get; set; } = 1024;
    public TimeSpan NbdHandshakeTimeout { get; set; } = TimeSpan.FromSeconds(10);
    public List<VolumeSpec> Volumes { get; set; } = [];

    /// <summary>iSCSI portals; empty turns the iSCSI target off (--iscsi-listen off).</summary>
    public List<EndPoint> IscsiListen { get; set; } = [new IPEndPoint(IPAddress.Loopback, IscsiSettings.DefaultPort)];
    public string IscsiIqnPrefix { get; set; } = Ballast.Iscsi.IscsiTargetOptions.DefaultIqnPrefix;
    public List<Ballast.Iscsi.IscsiGroupTarget> IscsiGroups { get; set; } = [];
    public int IscsiMaxConnections { get; set; } = 256;

    /// <summary>CHAP credentials initiators must log in with; the secret comes from the config file or a secret file.</summary>
    public IscsiChapSetting IscsiChap { get; } = new("iscsi-chap");

    /// <summary>The target's own credentials for mutual CHAP.</summary>
    public IscsiChapSetting IscsiMutualChap { get; } = new("iscsi-mutual-chap");

    public bool IscsiEnabled => IscsiListen.Count > 0;

    /// <summary>Persistent reservations live here, beside the pool.</summary>
    public string IscsiStateDirectory => Path.Combine(DataDir, "iscsi");

    /// <summary>This node's id among the replication peers; replication is off without it.</summary>
    public string? NodeId { get; set; }
    public EndPoint? ReplicationListen { get; set; }
    /// <summary>Every node of the cluster (this one included): id and replication address.</summary>
    public List<(string Id, EndPoint Address)> Nodes { get; set; } = [];
    public long ResyncRate { get; set; } = 64L << 20;
    public TimeSpan ReplicaTimeout { get; set; } = TimeSpan.FromSeconds(5);

    public bool ReplicationEnabled => NodeId != null;

    /// <summary>The control API's Unix socket (mode 0600).</summary>
    public string? ApiSocket { get; set; }
    public List<EndPoint> ApiListen { get; set; } = [];
    public string? ApiTokenFile { get; set; }

    /// <summary>/run/ballast/api.sock as root (the systemd RuntimeDirectory), else api.sock in the data directory.</summary>
    public string ApiSocketPath => ApiSocket ?? (Environment.UserName == "root"
        ? Path.Combine(Environment.GetEnvironmentVariable("RUNTIME_DIRECTORY")?.Split(':')[0] ?? "/run/ballast", "api.sock")
        : Path.Combine(DataDir, "api.sock"));
    public LogLevel LogLevel { get; set; } = LogLevel.Information;

    /// <summary>Where settings were read from, for the start-up log.</summary>
    public string? ConfigFile { get; set; }

    public string PoolPath => Path.Combine(DataDir, "pool.dat");

    /// <summary>/var/lib/ballast as root (the systemd StateDirectory); ./.ballast for anyone else.</summary>
    public static string DefaultDataDir() => Environment.UserName == "root" || Environment.GetEnvironmentVariable("STATE_DIRECTORY") is { Length: > 0 }
        ? Environment.GetEnvironmentVariable("STATE_DIRECTORY")?.Split(':')[0] ?? "/var/lib/ballast"
        : Path.GetFullPath(".ballast");
}
