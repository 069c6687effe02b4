using System.Globalization;
using System.Text.Json;

namespace Ballast.Daemon.Configuration;

/// <summary>
/// Builds <see cref="DaemonSettings"/> from defaults, then the config file, then the command
/// line (a key given on the command line replaces the file's value, lists included).
/// </summary>
public static class SettingsLoader
{
    public const string DefaultConfigFile = "/etc/ballast/ballastd.json";

    /// <param name="commandLine">Values given as flags, by key.</param>
    /// <param name="configFile">Explicit --config path; null uses /etc/ballast/ballastd.json if it exists.</param>
    public static DaemonSettings Load(IReadOnlyDictionary<string, IReadOnlyList<string>> commandLine, string? configFile)
    {
        var values = new Dictionary<string, IReadOnlyList<string>>(StringComparer.Ordinal);
        string? used = null;
        if (configFile != null || File.Exists(DefaultConfigFile))
        {
            used = configFile ?? DefaultConfigFile;
            foreach (var (k, v) in ReadFile(used))
            {
                values[k] = v;
            }
        }
        foreach (var (k, v) in commandLine)
        {
            values[k] = v;
        }
        var settings = new DaemonSettings { ConfigFile = used };
        foreach (var def in SettingsSchema.All)
        {
            if (values.TryGetValue(def.Key, out var v) && v.Count > 0)
            {
                def.Apply(settings, v);
            }
        }
        Validate(settings);
        return settings;
    }

    private static Dictionary<string, IReadOnlyList<string>> ReadFile(string path)
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(File.ReadAllText(path), new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true });
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new SettingsException("config", $"cannot read {path}: {PathProblem.Describe(path, e)}");
        }
        catch (JsonException e)
        {
            // JsonException counts lines and columns from 0 in its message; editors count from 1.
            var where = e.LineNumber is { } line ? $" at line {line + 1}, column {(e.BytePositionInLine ?? 0) + 1}" : "";
            var what = e.Message.Split(" LineNumber:", 2)[0].TrimEnd(' ', '.');
            throw new SettingsException("config", $"{path} is not valid JSON{where}: {what}");
        }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
            {
                throw new SettingsException("config", $"{path} must hold one JSON object of \"setting\": value pairs");
            }
            var result = new Dictionary<string, IReadOnlyList<string>>(StringComparer.Ordinal);
            foreach (var p in doc.RootElement.EnumerateObject())
            {
                if (p.Name == "nodes" && p.Value.ValueKind == JsonValueKind.Array)
                {
                    // The shape: "nodes": [{"id": "n1", "address": "10.0.0.1:7110"}], same as repeated --node.
                    result["node"] = [.. p.Value.EnumerateArray().Select(NodeObject)];
                    continue;
                }
                if (p.Name == "iscsiGroups" && p.Value.ValueKind == JsonValueKind.Array)
                {
                    // "iscsiGroups": [{"name": "db", "volumes": ["db-data", "db-log"]}], same as repeated --iscsi-group.
                    result["iscsi-group"] = [.. p.Value.EnumerateArray().Select(GroupObject)];
                    continue;
                }
                var def = SettingsSchema.All.FirstOrDefault(d => d.Key == p.Name)
                    ?? throw new SettingsException(p.Name, $"unknown setting in {path}; ballastd --help lists them (keys are the flag names without --)");
                if (p.Value.ValueKind == JsonValueKind.Array)
                {
                    if (!def.Repeatable)
                    {
                        throw new SettingsException(p.Name, "takes one value, not a list");
                    }
                    result[p.Name] = [.. p.Value.EnumerateArray().Select(e => Scalar(p.Name, e))];
                }
                else
                {
                    result[p.Name] = [Scalar(p.Name, p.Value)];
                }
            }
            return result;
        }
    }

    private static string NodeObject(JsonElement e)
    {
        if (e.ValueKind != JsonValueKind.Object || !e.TryGetProperty("id", out var id) || !e.TryGetProperty("address", out var address)
            || id.ValueKind != JsonValueKind.String || address.ValueKind != JsonValueKind.String)
        {
            throw new SettingsException("nodes", "each entry is {\"id\": \"n1\", \"address\": \"10.0.0.1:7110\"}");
        }
        return $"{id.GetString()}={address.GetString()}";
    }

    private static string GroupObject(JsonElement e)
    {
        if (e.ValueKind != JsonValueKind.Object || !e.TryGetProperty("name", out var name) || !e.TryGetProperty("volumes", out var volumes)
            || name.ValueKind != JsonValueKind.String || volumes.ValueKind != JsonValueKind.Array
            || volumes.EnumerateArray().Any(v => v.ValueKind != JsonValueKind.String))
        {
            throw new SettingsException("iscsiGroups", "each entry is {\"name\": \"db\", \"volumes\": [\"db-data\", \"db-log\"]}");
        }
        // Checked like the flag form; a comma inside a name is caught there as a bad volume name.
        return $"{name.GetString()}={string.Join(',', volumes.EnumerateArray().Select(v => v.GetString()))}";
    }

    private static string Scalar(string key, JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.String => e.GetString()!,
        JsonValueKind.Number => e.GetRawText(),
        JsonValueKind.True => "true",
        JsonValueKind.False => "false",
        _ => throw new SettingsException(key, $"expected a string or number, got {e.ValueKind.ToString().ToLower(CultureInfo.InvariantCulture)}"),
    };

    private static void Validate(DaemonSettings s)
    {
        if (s.NbdTls != Ballast.Nbd.NbdTlsMode.Off && (s.NbdTlsCertificate == null || s.NbdTlsKey == null))
        {
            throw new SettingsException("nbd-tls", $"TLS mode {s.NbdTls.ToString().ToLowerInvariant()} needs --nbd-tls-certificate and --nbd-tls-key");
        }
        if (s.ApiListen.Count > 0)
        {
            if (s.ApiTokenFile == null)
            {
                throw new SettingsException("api-listen", "serving the control API over TCP needs --api-token-file (clients send its token as a bearer token)");
            }
            if (s.ApiListen.Any(e => e is System.Net.Sockets.UnixDomainSocketEndPoint))
            {
                throw new SettingsException("api-listen", "takes TCP addresses; the Unix socket is --api-socket");
            }
        }
        if (s.NodeId != null)
        {
            if (s.ReplicationListen == null)
            {
                throw new SettingsException("replication-listen", "replication (--node-id) needs the address replicas are reached on");
            }
            if (!s.Nodes.Any(n => n.Id == s.NodeId))
            {
                s.Nodes.Add((s.NodeId, s.ReplicationListen));
            }
            var dupNode = s.Nodes.GroupBy(n => n.Id).FirstOrDefault(g => g.Count() > 1);
            if (dupNode != null)
            {
                throw new SettingsException("node", $"node {dupNode.Key} is listed more than once");
            }
        }
        else if (s.ReplicationListen != null || s.Nodes.Count > 0)
        {
            throw new SettingsException("node-id", "--replication-listen and --node need --node-id (this node's id)");
        }
        IscsiSettings.Resolve(s);
        var dup = s.Volumes.GroupBy(v => v.Name).FirstOrDefault(g => g.Count() > 1);
        if (dup != null)
        {
            throw new SettingsException("volume", $"volume {dup.Key} is given more than once");
        }
    }
}
