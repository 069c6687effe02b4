namespace Ballast.Iscsi.Tests.Support;

/// <summary>
/// A session on its own volume doing verified writes and reads in the background, so a test can
/// show the target keeps serving it while something else is attacked.
/// </summary>
public sealed class Canary : IAsyncDisposable
{
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _loop;
    private long _ops;

    private Canary(RawInitiator client)
    {
        _loop = Task.Run(() => LoopAsync(client));
    }

    public long Operations => Interlocked.Read(ref _ops);
    public string? Failure { get; private set; }

    public static async Task<Canary> StartAsync(int port, string volume)
    {
        var c = await RawInitiator.ConnectAsync(port);
        var status = await c.LoginAsync(TargetFixture.Iqn(volume), "iqn.2026-11.test:canary");
        Assert.That(status, Is.Zero, "canary login");
        return new Canary(c);
    }

    private async Task LoopAsync(RawInitiator c)
    {
        var rnd = new Random(7);
        var data = new byte[4096];
        try
        {
            while (!_stop.IsCancellationRequested)
            {
                rnd.NextBytes(data);
                var lba = (uint)rnd.Next(0, 1000) * 8;
                var w = await c.CommandAsync(Cdb.Write10(lba, 8), writeData: data, timeout: TimeSpan.FromSeconds(10));
                if (w is null || w.Status != 0)
                {
                    Failure = $"canary write failed: {(w is null ? "connection lost" : $"status {w.Status}")}";
                    return;
                }
                var r = await c.CommandAsync(Cdb.Read10(lba, 8), readLength: 4096, timeout: TimeSpan.FromSeconds(10));
                if (r is null || r.Status != 0 || !r.Data.AsSpan().SequenceEqual(data))
                {
                    Failure = "canary read did not return what was written";
                    return;
                }
                Interlocked.Increment(ref _ops);
                await Task.Delay(5);
            }
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
            Failure = "canary connection failed: " + e.Message;
        }
        finally
        {
            await c.DisposeAsync();
        }
    }

    /// <summary>Asserts the canary is healthy and made progress since <paramref name="before"/>.</summary>
    public async Task AssertAliveSinceAsync(long before)
    {
        var until = DateTime.UtcNow.AddSeconds(10);
        while (Operations <= before + 2 && Failure is null && DateTime.UtcNow < until)
        {
            await Task.Delay(50);
        }
        Assert.That(Failure, Is.Null);
        Assert.That(Operations, Is.GreaterThan(before + 2), "the other session kept doing I/O");
    }

    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        await _loop;
        _stop.Dispose();
    }
}
