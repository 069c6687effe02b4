using System.Runtime.InteropServices;

namespace Ballast.TestSupport.Interop;

/// <summary>kill(2): tests stop daemons with SIGTERM (graceful) or SIGKILL (crash).</summary>
public static partial class Signals
{
    public const int SigHup = 1;
    public const int SigTerm = 15;
    public const int SigKill = 9;
    public const int SigInt = 2;

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int Kill(int pid, int signal);

    public static void Send(int pid, int signal)
    {
        if (Kill(pid, signal) != 0)
        {
            throw new InvalidOperationException($"kill({pid}, {signal}) failed: errno {Marshal.GetLastPInvokeError()}");
        }
    }
}
