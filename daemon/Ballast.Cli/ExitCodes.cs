using Ballast.Control;

namespace Ballast.Cli;

/// <summary>Distinct exit codes, so scripts can tell failures apart without parsing messages.</summary>
public static class ExitCodes
{
    public const int Ok = 0;
    public const int Failed = 1;
    public const int Usage = 2;
    public const int NotFound = 3;
    public const int Conflict = 4;
    public const int Unreachable = 5;
    public const int Invalid = 6;
    public const int NoSpace = 7;
    /// <summary>volume verify found copies that differ.</summary>
    public const int Differ = 8;

    public const string Help = "exit codes: 0 ok, 1 failed, 2 usage, 3 not found, 4 conflicts with the current state (exists, in use, refused), 5 ballastd unreachable, 6 invalid value, 7 pool full, 8 replicas differ (verify)";

    public static int For(ControlException e) => e.Code switch
    {
        ErrorCodes.NotFound => NotFound,
        ErrorCodes.Exists or ErrorCodes.InUse or ErrorCodes.Refused => Conflict,
        ControlException.Unreachable or ErrorCodes.Unauthorized => Unreachable,
        ErrorCodes.Invalid => Invalid,
        ErrorCodes.NoSpace => NoSpace,
        _ => Failed,
    };
}
