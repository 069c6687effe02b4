using System.CommandLine;
using Ballast.Daemon;

// The host handles SIGINT/SIGTERM itself (a graceful drain can take longer than a CLI timeout allows).
return await DaemonCommand.Build().Parse(args).InvokeAsync(new InvocationConfiguration { ProcessTerminationTimeout = null }).ConfigureAwait(false);
