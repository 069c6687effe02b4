using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Net.Sockets;
using System.Text.Json;

namespace Ballast.Control;

/// <summary>The control API over a Unix socket (the default, root only) or TCP with a bearer token.</summary>
public sealed class ControlClient : IDisposable
{
    public const string DefaultSocket = "/run/ballast/api.sock";

    /// <summary>Where ballastd started by this user in this directory listens when not told:
    /// /run/ballast/api.sock for root, else ./.ballast/api.sock (ballastd's default data directory)
    /// if there is one there, else /run/ballast/api.sock.</summary>
    public static string DefaultSocketPath()
    {
        if (Environment.UserName == "root")
        {
            return DefaultSocket;
        }
        var local = Path.GetFullPath(Path.Combine(".ballast", "api.sock"));
        return File.Exists(local) ? local : DefaultSocket;
    }

    /// <summary>camelCase, indented, and no \u escapes for &lt; &gt; &amp; (nothing here is embedded in HTML).</summary>
    public static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web)
    {
        WriteIndented = true,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    private readonly HttpClient _http;
    private readonly string _target;

    private ControlClient(HttpClient http, string target)
    {
        _http = http;
        _target = target;
    }

    public static ControlClient ForUnixSocket(string path)
    {
        var handler = new SocketsHttpHandler
        {
            ConnectCallback = async (_, ct) =>
            {
                var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                try
                {
                    await s.ConnectAsync(new UnixDomainSocketEndPoint(path), ct).ConfigureAwait(false);
                    return new NetworkStream(s, ownsSocket: true);
                }
                catch
                {
                    s.Dispose();
                    throw;
                }
            },
        };
        return new ControlClient(new HttpClient(handler) { BaseAddress = new Uri("http://ballastd"), Timeout = Timeout.InfiniteTimeSpan }, path);
    }

    public static ControlClient ForUrl(Uri url, string? token)
    {
        var http = new HttpClient { BaseAddress = url, Timeout = Timeout.InfiniteTimeSpan };
        if (token != null)
        {
            http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }
        return new ControlClient(http, url.ToString());
    }

    public Task<IReadOnlyList<VolumeDto>> ListVolumesAsync(CancellationToken ct = default) => GetAsync<IReadOnlyList<VolumeDto>>(Routes.Volumes, ct);

    public Task<VolumeDto> InspectAsync(string name, CancellationToken ct = default) => GetAsync<VolumeDto>(Routes.Volume(name), ct);

    public Task<VolumeDto> CreateVolumeAsync(CreateVolumeRequest request, CancellationToken ct = default) => SendAsync<VolumeDto>(HttpMethod.Post, Routes.Volumes, request, ct);

    public Task<VolumeDto> ResizeAsync(string name, ResizeVolumeRequest request, CancellationToken ct = default) => SendAsync<VolumeDto>(HttpMethod.Post, Routes.Resize(name), request, ct);

    public Task DeleteVolumeAsync(string name, bool force, CancellationToken ct = default) => SendAsync<JsonElement>(HttpMethod.Delete, Routes.Volume(name) + (force ? "?force=true" : ""), null, ct);

    public Task<VolumeDto> CreateSnapshotAsync(string volume, string name, CancellationToken ct = default) => SendAsync<VolumeDto>(HttpMethod.Post, Routes.VolumeSnapshots(volume), new CreateSnapshotRequest(name), ct);

    public Task<IReadOnlyList<VolumeDto>> ListSnapshotsAsync(string? volume, CancellationToken ct = default) =>
        GetAsync<IReadOnlyList<VolumeDto>>(volume == null ? Routes.Snapshots : $"{Routes.Snapshots}?volume={Uri.EscapeDataString(volume)}", ct);

    public Task DeleteSnapshotAsync(string name, bool force, CancellationToken ct = default) => SendAsync<JsonElement>(HttpMethod.Delete, Routes.Snapshot(name) + (force ? "?force=true" : ""), null, ct);

    public Task<VolumeDto> CloneAsync(string snapshot, string name, CancellationToken ct = default) => SendAsync<VolumeDto>(HttpMethod.Post, Routes.Clone(snapshot), new CloneRequest(name), ct);

    public Task<VolumeDto> AttachAsync(string name, AttachRequest request, CancellationToken ct = default) => SendAsync<VolumeDto>(HttpMethod.Post, Routes.Attach(name), request, ct);

    public Task<VerifyDto> VerifyAsync(string name, CancellationToken ct = default) => SendAsync<VerifyDto>(HttpMethod.Post, Routes.Verify(name), new { }, ct);

    /// <summary>Runs until the volume is defragmented (no time limit: it takes as long as copying the scattered data); cancelling stops it.</summary>
    public Task<DefragDto> DefragmentAsync(string name, DefragRequest request, CancellationToken ct = default) =>
        SendAsync<DefragDto>(HttpMethod.Post, Routes.Defragment(name), request, ct, Timeout.InfiniteTimeSpan);

    public Task<StatusDto> StatusAsync(CancellationToken ct = default) => GetAsync<StatusDto>(Routes.Status, ct);

    public Task<ExportListDto> ExportsAsync(CancellationToken ct = default) => GetAsync<ExportListDto>(Routes.Exports, ct);

    public async Task<string> MetricsTextAsync(CancellationToken ct = default)
    {
        using var response = await CallAsync(new HttpRequestMessage(HttpMethod.Get, Routes.Metrics), ct).ConfigureAwait(false);
        return await response.Content.ReadAsStringAsync(ct).ConfigureAwait(false);
    }

    private Task<T> GetAsync<T>(string path, CancellationToken ct) => SendAsync<T>(HttpMethod.Get, path, null, ct);

    /// <summary>How long a call may take, unless it says otherwise.</summary>
    public static readonly TimeSpan CallTimeout = TimeSpan.FromSeconds(120);

    private async Task<T> SendAsync<T>(HttpMethod method, string path, object? body, CancellationToken ct, TimeSpan? timeout = null)
    {
        var request = new HttpRequestMessage(method, path);
        if (body != null)
        {
            request.Content = JsonContent.Create(body, body.GetType(), options: Json);
        }
        using var response = await CallAsync(request, ct, timeout).ConfigureAwait(false);
        if (response.StatusCode == HttpStatusCode.NoContent)
        {
            return default!;
        }
        return (await response.Content.ReadFromJsonAsync<T>(Json, ct).ConfigureAwait(false))!;
    }

    private async Task<HttpResponseMessage> CallAsync(HttpRequestMessage request, CancellationToken ct, TimeSpan? timeout = null)
    {
        HttpResponseMessage response;
        using var limit = CancellationTokenSource.CreateLinkedTokenSource(ct);
        limit.CancelAfter(timeout ?? CallTimeout);
        try
        {
            response = await _http.SendAsync(request, limit.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            throw new ControlException(ControlException.Unreachable, $"ballastd at {_target} did not answer within {(timeout ?? CallTimeout).TotalSeconds:F0} s",
                "it may be busy or stuck: see its log (journalctl -u ballastd)", 0);
        }
        catch (HttpRequestException e)
        {
            var why = _target.StartsWith('/') && !File.Exists(_target) ? "there is no API socket there" : e.InnerException?.Message ?? e.Message;
            throw new ControlException(ControlException.Unreachable, $"cannot reach ballastd at {_target}: {why}",
                "is ballastd running? (systemctl status ballastd); ballastctl --socket PATH or --url URL names another daemon", 0);
        }
        finally
        {
            request.Dispose();
        }
        if (response.IsSuccessStatusCode)
        {
            return response;
        }
        using (response)
        {
            ErrorDto? error = null;
            try
            {
                error = await response.Content.ReadFromJsonAsync<ErrorDto>(Json, ct).ConfigureAwait(false);
            }
            catch (JsonException)
            {
            }
            throw new ControlException(error?.Code ?? ErrorCodes.Internal, error?.Error ?? $"ballastd answered {(int)response.StatusCode} {response.ReasonPhrase}", error?.Hint, (int)response.StatusCode);
        }
    }

    public void Dispose() => _http.Dispose();
}
