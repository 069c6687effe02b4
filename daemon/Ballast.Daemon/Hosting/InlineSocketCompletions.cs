namespace Ballast.Daemon.Hosting;

/// <summary>
/// Socket completions run on the runtime's epoll threads instead of being posted to the thread
/// pool. Every NBD or iSCSI request otherwise costs a thread hand-off before it is even parsed;
/// on a 2-core host that hop was a third of a 4 KiB write's CPU (bench/RESULTS.md). What runs
/// there is our receive loops, which parse, start the I/O and await: they never block. The
/// runtime reads the switch from the environment once, when the first socket is used, so this
/// runs first thing in Main; DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS=0 turns it off.
/// </summary>
public static class InlineSocketCompletions
{
    public const string Variable = "DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS";

    public static void Enable()
    {
        if (Environment.GetEnvironmentVariable(Variable) == null)
        {
            Environment.SetEnvironmentVariable(Variable, "1");
        }
    }
}
