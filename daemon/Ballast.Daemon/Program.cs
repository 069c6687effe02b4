using System.CommandLine;
using Ballast.Daemon;
using Ballast.Daemon.Hosting;

InlineSocketCompletions.Enable();

var parsed = DaemonCommand.Build().Parse(args);
if (parsed.Errors.Count > 0 && !args.Contains("--help") && !args.Contains("-h"))
{
    // One line per problem and the bad-settings exit code, not the whole help on stdout.
    foreach (var e in parsed.Errors)
    {
        await Console.Error.WriteLineAsync($"ballastd: {e.Message}").ConfigureAwait(false);
    }
    await Console.Error.WriteLineAsync("ballastd --help lists every setting").ConfigureAwait(false);
    return DaemonCommand.ExitBadSettings;
}
// The host handles SIGINT/SIGTERM itself (a graceful drain can take longer than a CLI timeout allows).
return await parsed.InvokeAsync(new InvocationConfiguration { ProcessTerminationTimeout = null }).ConfigureAwait(false);
