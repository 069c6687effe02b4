using Ballast.Control;
using System.Globalization;
using Ballast.Nbd;
using Microsoft.Extensions.Logging;

namespace Ballast.Daemon.Configuration;

/// <summary>A setting value that cannot be used; the message names the key and what is allowed.</summary>
public sealed class SettingsException(string key, string message) : Exception($"{key}: {message}")
{
    public string Key { get; } = key;
}

/// <summary>
/// One setting: its flag (--key) is also its key in the config file. A config-only setting (a
/// secret) has no flag, because command lines are visible to every user in ps.
/// </summary>
public sealed record SettingDef(string Key, string ValueName, string Help, bool Repeatable, Action<DaemonSettings, IReadOnlyList<string>> Apply, bool ConfigOnly = false);

/// <summary>
/// Every setting ballastd has, in one table: the command line and the config file are built
/// from it, so a flag always has a config key and both are validated the same way.
/// </summary>
public static class SettingsSchema
{
    public static readonly IReadOnlyList<SettingDef> All =
    [
        One("data-dir", "DIR", "Directory holding the pool and daemon state (default: /var/lib/ballast as root, ./.ballast otherwise).",
            (s, v) => s.DataDir = Path.GetFullPath(v)),
        One("pool-size", "SIZE", "Capacity of a new pool, like 100GiB (default: 90% of the free space, at most 4 TiB; the file starts sparse and is filled as the pool is used).",
            (s, v) => s.PoolSize = Size("pool-size", v, 64L << 20, 1L << 50)),
        One("pool-prepare-ahead", "SIZE", "Free pool space kept written with zeroes just ahead of the log (default 256MiB; 0 or off turns it off): on ext4/xfs a sync after writes into never-written space commits the journal. Each part of the file is zeroed once, just before its first use.",
            (s, v) => s.PoolPrepareAhead = v is "0" or "off" ? 0 : Size("pool-prepare-ahead", v, 0, 1L << 50)),
        Many("volume", "NAME:SIZE[:BLOCKSIZE]", "Create this volume at start if it does not exist (repeatable), like demo:1GiB or db:10GiB:512.",
            (s, vs) => s.Volumes = [.. vs.Select(ParseVolume)]),
        Many("nbd-listen", "ADDR:PORT|unix:PATH", "Serve NBD here (repeatable; default 127.0.0.1:10809).",
            (s, vs) => s.NbdListen = [.. vs.Select(v => Endpoint("nbd-listen", v))]),
        One("nbd-default-export", "NAME", "Volume served to NBD clients that ask for the default export \"\".",
            (s, v) => s.NbdDefaultExport = v),
        One("nbd-tls", "off|on|require", "TLS for NBD: off, on (clients may upgrade with STARTTLS), require (every client must).",
            (s, v) => s.NbdTls = Enum<NbdTlsMode>("nbd-tls", v)),
        One("nbd-tls-certificate", "FILE", "PEM certificate (chain) for NBD TLS.", (s, v) => s.NbdTlsCertificate = v),
        One("nbd-tls-key", "FILE", "PEM private key for NBD TLS.", (s, v) => s.NbdTlsKey = v),
        One("nbd-max-connections", "N", "NBD connections open at once (default 1024).",
            (s, v) => s.NbdMaxConnections = Int("nbd-max-connections", v, 1, 1 << 20)),
        One("nbd-handshake-timeout", "SECONDS", "Time a client has to finish the NBD handshake (default 10).",
            (s, v) => s.NbdHandshakeTimeout = TimeSpan.FromSeconds(Int("nbd-handshake-timeout", v, 1, 3600))),
        Many("iscsi-listen", "ADDR:PORT|off", "Serve iSCSI here (repeatable; default 127.0.0.1:3260); off turns the iSCSI target off.",
            (s, vs) => s.IscsiListen = IscsiSettings.ParseListen(vs, v => Endpoint("iscsi-listen", v))),
        One("iscsi-iqn-prefix", "PREFIX", "Target names are PREFIX:<volume>, LUN 0 (default iqn.2026-11.io.ballast).",
            (s, v) => s.IscsiIqnPrefix = IscsiSettings.ParsePrefix(v)),
        Many("iscsi-group", "NAME=VOL[,VOL...]", "A group target PREFIX:NAME carrying the volumes as LUN 0, 1, ... (repeatable); in the config file also \"iscsiGroups\": [{\"name\": .., \"volumes\": [..]}].",
            (s, vs) => s.IscsiGroups = [.. vs.Select(IscsiSettings.ParseGroup)]),
        One("iscsi-chap-user", "USER", "CHAP user name initiators must log in with (discovery too); the secret is iscsi-chap-secret in the config file or --iscsi-chap-secret-file.",
            (s, v) => s.IscsiChap.User = v),
        Secret("iscsi-chap-secret", "The initiators' CHAP secret (config file only, which must then be chmod 600).",
            (s, v) => s.IscsiChap.InlineSecret = v),
        One("iscsi-chap-secret-file", "FILE", "File holding the initiators' CHAP secret on its first line; readable by its owner only (chmod 600).",
            (s, v) => s.IscsiChap.SecretFile = Path.GetFullPath(v)),
        One("iscsi-mutual-chap-user", "USER", "The target's own CHAP user name, for initiators that ask for mutual CHAP; needs iscsi-chap-user too.",
            (s, v) => s.IscsiMutualChap.User = v),
        Secret("iscsi-mutual-chap-secret", "The target's mutual CHAP secret (config file only, which must then be chmod 600).",
            (s, v) => s.IscsiMutualChap.InlineSecret = v),
        One("iscsi-mutual-chap-secret-file", "FILE", "File holding the target's mutual CHAP secret; readable by its owner only (chmod 600).",
            (s, v) => s.IscsiMutualChap.SecretFile = Path.GetFullPath(v)),
        One("iscsi-max-connections", "N", "iSCSI connections open at once (default 256).",
            (s, v) => s.IscsiMaxConnections = Int("iscsi-max-connections", v, 1, 1 << 20)),
        One("api-socket", "PATH", "Unix socket of the control API that ballastctl uses (default /run/ballast/api.sock as root, else DATA-DIR/api.sock); mode 0600.",
            (s, v) => s.ApiSocket = Path.GetFullPath(v)),
        Many("api-listen", "ADDR:PORT", "Also serve the control API and metrics over TCP (repeatable); requires --api-token-file.",
            (s, vs) => s.ApiListen = [.. vs.Select(v => Endpoint("api-listen", v))]),
        One("api-token-file", "FILE", "File holding the bearer token TCP clients must send; readable by its owner only (chmod 600).",
            (s, v) => s.ApiTokenFile = Path.GetFullPath(v)),
        One("node-id", "ID", "This node's id in the cluster; turns replication on (with --replication-listen and --node).",
            (s, v) => s.NodeId = NodeId("node-id", v)),
        One("replication-listen", "ADDR:PORT", "Where replicas are reached by primaries (this node's replication listener).",
            (s, v) => s.ReplicationListen = Endpoint("replication-listen", v)),
        Many("node", "ID=ADDR:PORT", "A cluster node and its replication address (repeatable, this node included); in the config file also \"nodes\": [{\"id\": .., \"address\": ..}].",
            (s, vs) => s.Nodes = [.. vs.Select(ParseNode)]),
        One("resync-rate", "SIZE", "Most bytes per second a resync copies (default 64MiB), so clients keep their latency. Each copied extent counts at least 8 KiB: small ones cost more per byte.",
            (s, v) => s.ResyncRate = Size("resync-rate", v, 1L << 20, 1L << 40)),
        One("replica-timeout", "SECONDS", "A replica that does not answer within this time is taken out of sync (default 5).",
            (s, v) => s.ReplicaTimeout = TimeSpan.FromSeconds(Int("replica-timeout", v, 1, 600))),
        One("log-level", "LEVEL", "trace, debug, information, warning, error or critical (default information).",
            (s, v) => s.LogLevel = Enum<LogLevel>("log-level", v)),
    ];

    private static SettingDef One(string key, string valueName, string help, Action<DaemonSettings, string> apply) =>
        new(key, valueName, help, false, (s, vs) => apply(s, vs[^1]));

    private static SettingDef Secret(string key, string help, Action<DaemonSettings, string> apply) =>
        new(key, "SECRET", help, false, (s, vs) => apply(s, vs[^1]), ConfigOnly: true);

    private static SettingDef Many(string key, string valueName, string help, Action<DaemonSettings, IReadOnlyList<string>> apply) =>
        new(key, valueName, help, true, apply);

    private static long Size(string key, string v, long min, long max)
    {
        if (!SizeText.TryParse(v, out var bytes))
        {
            throw new SettingsException(key, $"\"{v}\" {SizeText.Problem(v)}; write it like 512MiB, 10GiB or 1TiB");
        }
        if (bytes < min || bytes > max)
        {
            throw new SettingsException(key, $"{v} is outside {SizeText.Format(min)} .. {SizeText.Format(max)}");
        }
        return bytes;
    }

    private static int Int(string key, string v, int min, int max)
    {
        if (!int.TryParse(v, NumberStyles.Integer, CultureInfo.InvariantCulture, out var n) || n < min || n > max)
        {
            throw new SettingsException(key, $"\"{v}\" must be a whole number from {min} to {max}");
        }
        return n;
    }

    private static T Enum<T>(string key, string v) where T : struct, Enum
    {
        if (System.Enum.TryParse<T>(v, ignoreCase: true, out var e) && System.Enum.IsDefined(e) && !int.TryParse(v, out _))
        {
            return e;
        }
        var allowed = string.Join(", ", System.Enum.GetNames<T>().Where(n => n != "None").Select(n => n.ToLowerInvariant()));
        throw new SettingsException(key, $"\"{v}\" is not one of: {allowed}");
    }

    private static System.Net.EndPoint Endpoint(string key, string v) =>
        EndpointText.TryParse(v, out var ep, out var problem) ? ep : throw new SettingsException(key, $"\"{v}\": {problem}");

    private static string NodeId(string key, string v) =>
        System.Text.RegularExpressions.Regex.IsMatch(v, "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
            ? v
            : throw new SettingsException(key, $"\"{v}\" is not a node id: 1-63 characters from A-Z a-z 0-9 . _ -");

    public static (string, System.Net.EndPoint) ParseNode(string v)
    {
        var eq = v.IndexOf('=', StringComparison.Ordinal);
        if (eq <= 0)
        {
            throw new SettingsException("node", $"\"{v}\" should be ID=ADDR:PORT, like n2=10.0.0.2:7110");
        }
        return (NodeId("node", v[..eq]), Endpoint("node", v[(eq + 1)..]));
    }

    public static VolumeSpec ParseVolume(string v)
    {
        var parts = v.Split(':');
        if (parts.Length is < 2 or > 3 || parts[0].Length == 0)
        {
            throw new SettingsException("volume", $"\"{v}\" should be NAME:SIZE or NAME:SIZE:BLOCKSIZE, like demo:1GiB");
        }
        if (Ballast.Engine.Volumes.VolumeNames.Check(parts[0]) is { } bad)
        {
            throw new SettingsException("volume", bad);
        }
        var size = Size("volume", parts[1], 4096, Ballast.Engine.Pool.MaxVolumeSize);
        var block = parts.Length == 3 ? Int("volume", parts[2], 512, 4096) : 4096;
        if (block is not (512 or 4096))
        {
            throw new SettingsException("volume", $"block size {block} must be 512 or 4096");
        }
        if (size % block != 0)
        {
            throw new SettingsException("volume", $"size {parts[1]} of {parts[0]} is not a multiple of its {block}-byte block size");
        }
        return new VolumeSpec(parts[0], size, block);
    }
}
