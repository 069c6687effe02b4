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
    // Point at the help of the command that was being typed, not the top level.
    var path = new List<string>();
    for (var c = parsed.CommandResult; c != null; c = c.Parent as System.CommandLine.Parsing.CommandResult)
    {
        path.Insert(0, c.Command.Name);
    }
    path[0] = "ballastctl";
    await Console.Error.WriteLineAsync($"{string.Join(' ', path)} --help shows {(parsed.CommandResult.Command.Subcommands.Count > 0 ? "its commands" : "its options")}");
    return ExitCodes.Usage;
}
return await parsed.InvokeAsync();
