using Microsoft.Extensions.Logging;

namespace Ballast.Nbd;

/// <summary>Every log line of the NBD server, generated once (no formatting cost when the level is off).</summary>
internal static partial class Log
{
    [LoggerMessage(Level = LogLevel.Information, Message = "nbd: listening on {Endpoint}")]
    public static partial void Listening(ILogger logger, string endpoint);

    [LoggerMessage(Level = LogLevel.Information, Message = "nbd: {Peer} connected to export {Export} ({Mode}{Tls})")]
    public static partial void Connected(ILogger logger, string peer, string export, string mode, string tls);

    [LoggerMessage(Level = LogLevel.Information, Message = "nbd: {Peer} disconnected from export {Export} after {Seconds:0.0} s: {Requests} requests, {Read} bytes read, {Written} bytes written")]
    public static partial void Disconnected(ILogger logger, string peer, string export, double seconds, long requests, long read, long written);

    [LoggerMessage(Level = LogLevel.Information, Message = "nbd: {Peer}: handshake ended: {Reason}")]
    public static partial void HandshakeRefused(ILogger logger, string peer, string reason);

    [LoggerMessage(Level = LogLevel.Information, Message = "nbd: {Peer}: {Option} refused: {Reason}")]
    public static partial void UnknownExport(ILogger logger, string peer, string option, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "nbd: {Peer}: handshake timed out after {Seconds:0} s")]
    public static partial void HandshakeTimeout(ILogger logger, string peer, double seconds);

    [LoggerMessage(Level = LogLevel.Warning, Message = "nbd: {Peer} export {Export}: protocol violation, closing: {Reason}")]
    public static partial void ProtocolViolation(ILogger logger, string peer, string export, string reason);

    [LoggerMessage(Level = LogLevel.Information, Message = "nbd: {Peer} export {Export}: connection lost: {Reason}")]
    public static partial void ConnectionLost(ILogger logger, string peer, string export, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "nbd: {Peer} export {Export}: {Command} offset {Offset} length {Length} failed with {Error}: {Reason}")]
    public static partial void RequestFailed(ILogger logger, string peer, string export, string command, ulong offset, uint length, string error, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "nbd: {Peer} export {Export}: {Count} more requests failed and were not logged (at most 10 lines per second per connection)")]
    public static partial void FailuresSuppressed(ILogger logger, string peer, string export, int count);

    [LoggerMessage(Level = LogLevel.Debug, Message = "nbd: {Peer} export {Export}: {Command} offset {Offset} length {Length} refused with {Error}: {Reason}")]
    public static partial void RequestRefused(ILogger logger, string peer, string export, string command, ulong offset, uint length, string error, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "nbd: refused a connection from {Peer}: {Reason}")]
    public static partial void ConnectionRefused(ILogger logger, string peer, string reason);

    [LoggerMessage(Level = LogLevel.Error, Message = "nbd: {Peer}: connection failed")]
    public static partial void ConnectionFailed(ILogger logger, Exception error, string peer);

    [LoggerMessage(Level = LogLevel.Error, Message = "nbd: accepting on {Endpoint} failed")]
    public static partial void AcceptFailed(ILogger logger, Exception error, string endpoint);
}
