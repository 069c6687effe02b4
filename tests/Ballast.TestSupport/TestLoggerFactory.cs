using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace Ballast.TestSupport;

/// <summary>Keeps every log line (tests assert on them) and echoes warnings to the test output.</summary>
public sealed class TestLoggerFactory : ILoggerFactory, ILogger
{
    public ConcurrentQueue<string> Lines { get; } = new();

    public ILogger CreateLogger(string categoryName) => this;

    public void AddProvider(ILoggerProvider provider)
    {
    }

    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        var line = $"{logLevel}: {formatter(state, exception)}{(exception != null ? " " + exception.Message : "")}";
        Lines.Enqueue(line);
        if (logLevel >= LogLevel.Warning)
        {
            TestContext.Progress.WriteLine(line);
        }
    }

    public bool Contains(string text) => Lines.Any(l => l.Contains(text, StringComparison.Ordinal));

    public void Dispose()
    {
    }
}
