using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using Ballast.Control;
using Ballast.Daemon.Configuration;
using Ballast.Daemon.Metrics;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;

namespace Ballast.Daemon.Api;

/// <summary>
/// Kestrel for the control API: the Unix socket (0600, trusted by file permission) and optional
/// TCP listeners on which every request must carry the bearer token.
/// </summary>
public static class ApiHost
{
    public static void Configure(WebApplicationBuilder builder, DaemonSettings settings)
    {
        var socket = settings.ApiSocketPath;
        PathProblem.CreateDirectory("api-socket", System.IO.Path.GetDirectoryName(socket)!);
        RemoveStaleSocket(socket);
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.AddServerHeader = false;
            k.Limits.MaxRequestBodySize = 64 * 1024;
            k.Limits.MaxConcurrentConnections = 256;
            k.ListenUnixSocket(socket);
            foreach (var ep in settings.ApiListen.Cast<IPEndPoint>())
            {
                k.Listen(ep);
            }
        });
    }

    /// <summary>A socket file nobody answers on is left from a crash; one that answers belongs to a running daemon.</summary>
    private static void RemoveStaleSocket(string path)
    {
        if (!Engine.Interop.UnixFiles.IsSocket(path))
        {
            return;
        }
        using var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            probe.Connect(new UnixDomainSocketEndPoint(path));
        }
        catch (SocketException)
        {
            File.Delete(path);
            return;
        }
        throw new InvalidOperationException($"another ballastd answers on the API socket {path}; stop it or give this one --api-socket");
    }

    public static void Map(WebApplication app, DaemonSettings settings)
    {
        var token = settings.ApiTokenFile != null ? ReadToken(settings.ApiTokenFile) : null;
        app.Use(async (ctx, next) =>
        {
            // Unix socket clients are trusted by the socket's file mode; they have no IP address.
            var unix = ctx.Features.Get<IConnectionEndPointFeature>()?.LocalEndPoint is UnixDomainSocketEndPoint || ctx.Connection.LocalIpAddress == null;
            if (!unix && !Authorized(ctx, token))
            {
                ctx.Response.Headers.WWWAuthenticate = "Bearer";
                await ApiErrors.Error(StatusCodes.Status401Unauthorized, ErrorCodes.Unauthorized,
                    "this API needs a bearer token over TCP", "send Authorization: Bearer <token from --api-token-file>, or use the Unix socket").ExecuteAsync(ctx).ConfigureAwait(false);
                return;
            }
            await next(ctx).ConfigureAwait(false);
        });
        ControlApi.Map(app);
        app.MapGet(Routes.Metrics, (MetricsSnapshot m) => Results.Text(PrometheusText.Write(m.Collect()), PrometheusText.ContentType));
        app.MapGet(Routes.MetricsJson, (MetricsSnapshot m) => Results.Json(MetricsJson.From(m.Collect()), ControlClient.Json));
        app.MapFallback(() => ApiErrors.Error(StatusCodes.Status404NotFound, ErrorCodes.NotFound, "no such API path", "the API lives under /v1/ and /metrics"));
    }

    private static bool Authorized(HttpContext ctx, byte[]? token)
    {
        if (token == null)
        {
            return false;
        }
        var header = ctx.Request.Headers.Authorization.ToString();
        if (!header.StartsWith("Bearer ", StringComparison.Ordinal))
        {
            return false;
        }
        var given = Encoding.UTF8.GetBytes(header[7..].Trim());
        return CryptographicOperations.FixedTimeEquals(given, token);
    }

    /// <summary>The token must be in a file only its owner can read; it is never logged.</summary>
    private static byte[] ReadToken(string path)
    {
        if (!File.Exists(path))
        {
            throw new SettingsException("api-token-file", $"{path} does not exist");
        }
        var mode = File.GetUnixFileMode(path);
        if ((mode & (UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.OtherRead | UnixFileMode.OtherWrite)) != 0)
        {
            throw new SettingsException("api-token-file", $"{path} is readable by others; chmod 600 {path}");
        }
        var token = File.ReadAllText(path).Trim();
        if (token.Length < 16)
        {
            throw new SettingsException("api-token-file", $"the token in {path} is shorter than 16 characters");
        }
        return Encoding.UTF8.GetBytes(token);
    }
}
