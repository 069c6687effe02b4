using System.CommandLine;
using Ballast.Cli;
using Ballast.Cli.Commands;

var root = new RootCommand($"ballastctl: drive a Ballast daemon (ballastd) through its control API.\n{ExitCodes.Help}")
{
    CliContext.Json, CliContext.Socket, CliContext.Url, CliContext.TokenFile,
};
root.Subcommands.Add(VolumeCommands.Build());
root.Subcommands.Add(SnapshotCommands.Build());
root.Subcommands.Add(StatusCommands.Status());
root.Subcommands.Add(StatusCommands.Exports());

var parsed = root.Parse(args);
if (parsed.Errors.Count > 0 && !args.Contains("--help") && !args.Contains("-h"))
{
    foreach (var e in parsed.Errors)
    {
        await Console.Error.WriteLineAsync($"ballastctl: {e.Message}");
    }
    await Console.Error.WriteLineAsync("ballastctl --help shows the commands");
    return ExitCodes.Usage;
}
return await parsed.InvokeAsync();
