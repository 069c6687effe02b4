namespace Ballast.Control;

/// <summary>The API answered with an error (or could not be reached: code "unreachable").</summary>
public sealed class ControlException(string code, string message, string? hint, int status) : Exception(message)
{
    public const string Unreachable = "unreachable";

    public string Code { get; } = code;
    public string? Hint { get; } = hint;
    public int Status { get; } = status;
}
