using System.CommandLine;
using Ballast.Daemon.Api;
using Ballast.Daemon.Configuration;
using Ballast.Daemon.Hosting;
using Ballast.Daemon.Logging;
using Ballast.Daemon.Metrics;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Serilog;

namespace Ballast.Daemon;

/// <summary>ballastd's command line: one option per setting of the schema, plus --config.</summary>
public static class DaemonCommand
{
    public const int ExitBadSettings = 2;
    public const int ExitStartFailed = 1;

    public static RootCommand Build()
    {
        var root = new RootCommand("ballastd: Ballast's block-storage daemon. Keeps volumes in a log-structured pool in the data directory and serves them over NBD and iSCSI.");
        var config = new Option<string>("--config") { Description = $"JSON file of settings, keys named like the flags without -- (default {SettingsLoader.DefaultConfigFile} if it exists).", HelpName = "FILE" };
        root.Options.Add(config);
        var options = new List<(SettingDef Def, Option Option)>();
        foreach (var def in SettingsSchema.All)
        {
            if (def.ConfigOnly)
            {
                continue;
            }
            Option o = def.Repeatable
                ? new Option<string[]>("--" + def.Key) { Description = def.Help, HelpName = def.ValueName, Arity = ArgumentArity.OneOrMore, AllowMultipleArgumentsPerToken = false }
                : new Option<string>("--" + def.Key) { Description = def.Help, HelpName = def.ValueName };
            root.Options.Add(o);
            options.Add((def, o));
        }
        root.SetAction(async (result, ct) =>
        {
            var given = new Dictionary<string, IReadOnlyList<string>>(StringComparer.Ordinal);
            foreach (var (def, o) in options)
            {
                if (result.GetResult(o) == null)
                {
                    continue;
                }
                given[def.Key] = o is Option<string[]> many ? result.GetValue(many) ?? [] : [result.GetValue((Option<string>)o)!];
            }
            DaemonSettings settings;
            try
            {
                settings = SettingsLoader.Load(given, result.GetValue(config));
            }
            catch (SettingsException e)
            {
                await Console.Error.WriteLineAsync($"ballastd: invalid setting --{e.Key}: {e.Message[(e.Key.Length + 2)..]}").ConfigureAwait(false);
                return ExitBadSettings;
            }
            return await RunAsync(settings, ct).ConfigureAwait(false);
        });
        return root;
    }

    public static string Version =>
        typeof(DaemonCommand).Assembly.GetCustomAttributes(typeof(System.Reflection.AssemblyInformationalVersionAttribute), false) is [System.Reflection.AssemblyInformationalVersionAttribute v, ..]
            ? v.InformationalVersion.Split('+')[0]
            : "0.0.0";

    public static async Task<int> RunAsync(DaemonSettings settings, CancellationToken ct)
    {
        // Files and sockets ballastd creates (pool, state, the API socket) are its owner's alone.
        Engine.Interop.UnixFiles.SetUmask(0x3F);
        var logger = LogSetup.Create(settings.LogLevel);
        try
        {
            ListenPreflight.Check(settings);
            // ballastd reads no appsettings.json, so the host must not watch for one: its watcher
            // covers the working directory recursively, which under systemd is "/" (tens of
            // thousands of inotify watches) and otherwise often holds the pool (an event per write).
            var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = ["--hostBuilder:reloadConfigOnChange=false"] });
            builder.Logging.ClearProviders();
            builder.Logging.AddSerilog(logger);
            builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(90));
            builder.Services.Configure<ConsoleLifetimeOptions>(o => o.SuppressStatusMessages = true);
            builder.Services.AddSingleton(settings);
            builder.Services.AddSingleton(new DaemonInfo(Version, DateTimeOffset.UtcNow));
            builder.Services.AddSingleton(SdNotify.FromEnvironment());
            builder.Services.AddSingleton<PoolService>();
            builder.Services.AddHostedService(sp => sp.GetRequiredService<PoolService>());
            builder.Services.AddSingleton<ReplicationService>();
            builder.Services.AddHostedService(sp => sp.GetRequiredService<ReplicationService>());
            builder.Services.AddSingleton<ServedVolumes>();
            builder.Services.AddSingleton<NbdService>();
            builder.Services.AddHostedService(sp => sp.GetRequiredService<NbdService>());
            builder.Services.AddSingleton<IscsiService>();
            builder.Services.AddHostedService(sp => sp.GetRequiredService<IscsiService>());
            builder.Services.AddSingleton<ExportCatalog>();
            builder.Services.AddSingleton<MetricsSnapshot>();
            builder.Services.AddSingleton<RateSampler>();
            builder.Services.AddHostedService(sp => sp.GetRequiredService<RateSampler>());
            builder.Services.AddHostedService<ReadinessService>();
            builder.Services.AddHostedService<WatchdogService>();
            builder.Services.AddHostedService<HangupService>();
            // Disposed asynchronously: a failed start leaves the pool to the container to close.
            await using var app = BuildApp(builder, settings);
            try
            {
                await app.RunAsync(ct).ConfigureAwait(false);
                return 0;
            }
            catch (Exception e) when (e is SettingsException or InvalidOperationException or IOException or UnauthorizedAccessException or InvalidDataException)
            {
                logger.Fatal("ballastd could not start: {Reason}", e.Message);
                return ExitStartFailed;
            }
        }
        catch (Exception e) when (e is SettingsException or InvalidOperationException or IOException or UnauthorizedAccessException)
        {
            logger.Fatal("ballastd could not start: {Reason}", e.Message);
            return ExitStartFailed;
        }
        finally
        {
            await Log.CloseAndFlushAsync().ConfigureAwait(false);
            (logger as IDisposable)?.Dispose();
        }
    }

    private static WebApplication BuildApp(WebApplicationBuilder builder, DaemonSettings settings)
    {
        ApiHost.Configure(builder, settings);
        var app = builder.Build();
        ApiHost.Map(app, settings);
        return app;
    }
}
