using System.CommandLine;
using Ballast.Daemon;
using Ballast.Daemon.Hosting;

InlineSocketCompletions.Enable();

// The host handles SIGINT/SIGTERM itself (a graceful drain can take longer than a CLI timeout allows).
return await DaemonCommand.Build().Parse(args).InvokeAsync(new InvocationConfiguration { ProcessTerminationTimeout = null }).ConfigureAwait(false);
