using Ballast.Control;
using Ballast.Engine;
using Ballast.Engine.Volumes;
using Microsoft.AspNetCore.Http;

namespace Ballast.Daemon.Api;

/// <summary>Turns what the engine throws into an HTTP status and an error an operator can act on.</summary>
public static class ApiErrors
{
    public static IResult From(Exception e) => e switch
    {
        VolumeNotFoundException nf => Error(StatusCodes.Status404NotFound, ErrorCodes.NotFound, $"{Kind(nf.Name)} \"{nf.Name}\" not found", "ballastctl volume list shows the volumes, ballastctl snapshot list the snapshots"),
        VolumeExistsException ex => Error(StatusCodes.Status409Conflict, ErrorCodes.Exists, $"a volume or snapshot named \"{ex.Name}\" already exists", "pick another name, or delete the existing one first"),
        BlockVolumeException { Error: BlockError.NoSpace } ns => Error(StatusCodes.Status507InsufficientStorage, ErrorCodes.NoSpace, ns.Message, "delete or trim data, or give the pool more space"),
        ArgumentException ae => Error(StatusCodes.Status400BadRequest, ErrorCodes.Invalid, Trim(ae), null),
        InvalidOperationException io => Error(StatusCodes.Status409Conflict, ErrorCodes.Refused, io.Message, null),
        _ => Error(StatusCodes.Status500InternalServerError, ErrorCodes.Internal, $"internal error: {e.Message}", "see the ballastd log (journalctl -u ballastd)"),
    };

    public static IResult Error(int status, string code, string message, string? hint) =>
        Results.Json(new ErrorDto(code, message, hint), ControlClient.Json, statusCode: status);

    // Snapshots share the volumes' namespace as VOLUME@SNAPSHOT; '@' is not allowed in a volume's name.
    private static string Kind(string name) => name.Contains('@', StringComparison.Ordinal) ? "snapshot" : "volume";

    // ArgumentException appends " (Parameter 'x')", and ArgumentOutOfRangeException a line
    // "Actual value was y." after it: neither means anything to an operator.
    private static string Trim(ArgumentException e)
    {
        if (e.ParamName == null)
        {
            return e.Message;
        }
        var at = e.Message.IndexOf($" (Parameter '{e.ParamName}')", StringComparison.Ordinal);
        return at >= 0 ? e.Message[..at] : e.Message;
    }
}
