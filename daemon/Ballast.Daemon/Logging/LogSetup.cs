using Serilog;
using Serilog.Core;
using Serilog.Events;
using Serilog.Sinks.SystemConsole.Themes;

namespace Ballast.Daemon.Logging;

/// <summary>
/// Serilog to stdout, one event per line. Under systemd (JOURNAL_STREAM set) each line starts
/// with its syslog priority (&lt;3&gt; error .. &lt;7&gt; debug) so journald records the level, and the
/// journal adds its own timestamp.
/// </summary>
public static class LogSetup
{
    public static Serilog.ILogger Create(Microsoft.Extensions.Logging.LogLevel level)
    {
        var journald = Environment.GetEnvironmentVariable("JOURNAL_STREAM") is { Length: > 0 };
        var template = journald
            ? "{SyslogPriority}{Message:lj}{NewLine}{Exception}"
            : "{Timestamp:HH:mm:ss.fff} {Level:u3} {Message:lj}{NewLine}{Exception}";
        return new LoggerConfiguration()
            .MinimumLevel.Is(Map(level))
            .MinimumLevel.Override("Microsoft", LogEventLevel.Warning)
            // A start-up failure is reported once, by ballastd itself, without the host's stack trace.
            .MinimumLevel.Override("Microsoft.Extensions.Hosting", LogEventLevel.Fatal)
            .Enrich.With(new SyslogPriority())
            .WriteTo.Console(outputTemplate: template, theme: journald || Console.IsOutputRedirected ? ConsoleTheme.None : AnsiConsoleTheme.Code,
                formatProvider: System.Globalization.CultureInfo.InvariantCulture)
            .CreateLogger();
    }

    private static LogEventLevel Map(Microsoft.Extensions.Logging.LogLevel level) => level switch
    {
        Microsoft.Extensions.Logging.LogLevel.Trace => LogEventLevel.Verbose,
        Microsoft.Extensions.Logging.LogLevel.Debug => LogEventLevel.Debug,
        Microsoft.Extensions.Logging.LogLevel.Information => LogEventLevel.Information,
        Microsoft.Extensions.Logging.LogLevel.Warning => LogEventLevel.Warning,
        Microsoft.Extensions.Logging.LogLevel.Error => LogEventLevel.Error,
        _ => LogEventLevel.Fatal,
    };

    private sealed class SyslogPriority : ILogEventEnricher
    {
        private static readonly LogEventProperty[] Priorities =
        [
            new("SyslogPriority", new ScalarValue("<7>")), // verbose
            new("SyslogPriority", new ScalarValue("<7>")), // debug
            new("SyslogPriority", new ScalarValue("<6>")), // information
            new("SyslogPriority", new ScalarValue("<4>")), // warning
            new("SyslogPriority", new ScalarValue("<3>")), // error
            new("SyslogPriority", new ScalarValue("<2>")), // fatal
        ];

        public void Enrich(LogEvent logEvent, ILogEventPropertyFactory propertyFactory) =>
            logEvent.AddPropertyIfAbsent(Priorities[(int)logEvent.Level]);
    }
}
