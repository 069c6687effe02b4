using System.Collections.Concurrent;
using System.Diagnostics.Tracing;

/// <summary>
/// Loaded into ballastd with DOTNET_STARTUP_HOOKS to say where its garbage comes from: every
/// gen-2 collection with the runtime's reason for it, and every 10 s the types behind the
/// runtime's allocation samples (one sample per ~100 KB allocated). Written to stderr, which
/// ballastd's benches keep in their log. The tool exists because dotnet-trace is not in the
/// NuGet copy here.
/// </summary>
internal static class StartupHook
{
    private static GcListener? _listener;

    public static void Initialize()
    {
        _listener = new GcListener();
        var timer = new Thread(() =>
        {
            while (true)
            {
                Thread.Sleep(10_000);
                _listener.Report();
            }
        }) { IsBackground = true, Name = "gctrace" };
        timer.Start();
    }
}

internal sealed class GcListener : EventListener
{
    private const int GcKeyword = 0x1;
    private static readonly string[] Reasons =
    [
        "small alloc", "induced", "low memory", "empty", "large alloc", "out of space (SOH)",
        "out of space (LOH)", "induced not forced", "internal tuning", "induced low memory",
        "induced compacting", "low memory host", "pm full gc", "low memory host blocking",
    ];

    private readonly ConcurrentDictionary<string, long> _sampled = new();

    protected override void OnEventSourceCreated(EventSource source)
    {
        if (source.Name == "Microsoft-Windows-DotNETRuntime")
        {
            EnableEvents(source, EventLevel.Verbose, (EventKeywords)GcKeyword);
        }
    }

    protected override void OnEventWritten(EventWrittenEventArgs e)
    {
        if (e.EventName is null || e.Payload is null || e.PayloadNames is null)
        {
            return;
        }
        if (e.EventName.StartsWith("GCStart", StringComparison.Ordinal))
        {
            var depth = Convert.ToInt32(Get(e, "Depth"));
            if (depth >= 2)
            {
                var reason = Convert.ToInt32(Get(e, "Reason"));
                Console.Error.WriteLine($"gctrace: gen{depth} collection #{Get(e, "Count")}, reason: {(reason < Reasons.Length ? Reasons[reason] : reason.ToString())}");
            }
        }
        else if (e.EventName.StartsWith("GCAllocationTick", StringComparison.Ordinal))
        {
            var kind = Convert.ToInt32(Get(e, "AllocationKind")) switch { 0 => "", 1 => " (LOH)", _ => " (POH)" };
            var amount = Convert.ToInt64(Get(e, "AllocationAmount64") ?? Get(e, "AllocationAmount"));
            _sampled.AddOrUpdate($"{Get(e, "TypeName")}{kind}", amount, (_, v) => v + amount);
        }
    }

    private static object? Get(EventWrittenEventArgs e, string name)
    {
        var i = e.PayloadNames!.IndexOf(name);
        return i < 0 ? null : e.Payload![i];
    }

    public void Report()
    {
        var top = _sampled.ToArray().OrderByDescending(p => p.Value).Take(12).ToArray();
        _sampled.Clear();
        Console.Error.WriteLine($"gctrace: allocation samples of the last 10 s (bytes attributed, gen2 so far {GC.CollectionCount(2)}):");
        foreach (var (type, bytes) in top)
        {
            Console.Error.WriteLine($"gctrace:   {bytes,14:N0}  {type}");
        }
    }
}
