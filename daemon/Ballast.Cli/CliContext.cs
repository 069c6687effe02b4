using System.CommandLine;
using System.Text.Json;
using Ballast.Control;

namespace Ballast.Cli;

/// <summary>Global options every command shares, and how a command's outcome becomes output and an exit code.</summary>
public static class CliContext
{
    public static readonly Option<bool> Json = new("--json") { Description = "Print the API's JSON instead of a table (for scripts).", Recursive = true };

    public static readonly Option<string> Socket = new("--socket")
    {
        Description = $"ballastd's API socket (default $BALLAST_API_SOCKET, else {ControlClient.DefaultSocket} as root and ./.ballast/api.sock, if it exists, for other users: where ballastd puts it when not told).",
        HelpName = "PATH",
        Recursive = true,
    };

    public static readonly Option<string> Url = new("--url") { Description = "Talk to ballastd over TCP instead, like http://10.0.0.5:8443 (needs --token-file).", HelpName = "URL", Recursive = true };

    public static readonly Option<string> TokenFile = new("--token-file") { Description = "File with the API bearer token (for --url).", HelpName = "FILE", Recursive = true };

    public static ControlClient Connect(ParseResult r)
    {
        if (r.GetValue(Url) is { } url)
        {
            var tokenFile = r.GetValue(TokenFile) ?? throw new CliUsageException("--url needs --token-file (the token ballastd reads from --api-token-file)");
            return ControlClient.ForUrl(new Uri(url), File.ReadAllText(tokenFile).Trim());
        }
        var socket = r.GetValue(Socket) ?? Environment.GetEnvironmentVariable("BALLAST_API_SOCKET") ?? ControlClient.DefaultSocketPath();
        return ControlClient.ForUnixSocket(socket);
    }

    /// <summary>Runs one API call: JSON or human output on success; the error, a hint and a distinct exit code on failure.</summary>
    public static async Task<int> RunAsync<T>(ParseResult r, Func<ControlClient, Task<T>> call, Func<T, string> human)
    {
        try
        {
            using var client = Connect(r);
            var result = await call(client).ConfigureAwait(false);
            var text = r.GetValue(Json) ? JsonSerializer.Serialize(result, ControlClient.Json) : human(result);
            if (text.Length > 0)
            {
                await Console.Out.WriteLineAsync(text.TrimEnd('\n')).ConfigureAwait(false);
            }
            return ExitCodes.Ok;
        }
        catch (ControlException e)
        {
            await Console.Error.WriteLineAsync($"ballastctl: {e.Message}{(e.Hint != null ? $"; {e.Hint}" : "")}").ConfigureAwait(false);
            return ExitCodes.For(e);
        }
        catch (CliUsageException e)
        {
            await Console.Error.WriteLineAsync($"ballastctl: {e.Message}").ConfigureAwait(false);
            return ExitCodes.Usage;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or UriFormatException)
        {
            await Console.Error.WriteLineAsync($"ballastctl: {e.Message}").ConfigureAwait(false);
            return ExitCodes.Failed;
        }
    }

    public static long ParseSize(string text, string option) =>
        SizeText.TryParse(text, out var b) ? b : throw new CliUsageException($"{option} \"{text}\" {SizeText.Problem(text)}; write it like 10GiB or 512MiB");
}

/// <summary>A command line that cannot be run as given.</summary>
public sealed class CliUsageException(string message) : Exception(message);
