namespace Ballast.Control;

/// <summary>Paths of the control API (HTTP/JSON on a Unix socket, or TCP with a bearer token).</summary>
public static class Routes
{
    public const string Volumes = "/v1/volumes";
    public const string Snapshots = "/v1/snapshots";
    public const string Status = "/v1/status";
    public const string Exports = "/v1/exports";
    public const string Metrics = "/metrics";
    public const string MetricsJson = "/metrics.json";

    public static string Volume(string name) => $"{Volumes}/{Uri.EscapeDataString(name)}";
    public static string Resize(string name) => $"{Volume(name)}/resize";
    public static string VolumeSnapshots(string name) => $"{Volume(name)}/snapshots";
    public static string Clone(string snapshot) => $"{Volume(snapshot)}/clone";
    public static string Attach(string name) => $"{Volume(name)}/attach";
    public static string Verify(string name) => $"{Volume(name)}/verify";
    public static string Defragment(string name) => $"{Volume(name)}/defragment";
    public static string Snapshot(string name) => $"{Snapshots}/{Uri.EscapeDataString(name)}";
}
