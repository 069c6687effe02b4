using System.Net;
using System.Net.Sockets;
using Ballast.Iscsi.Tests.Support;

namespace Ballast.Iscsi.Tests.Integration;

/// <summary>The daemon-facing API: sessions, forced disconnects, live volume changes, naming, groups, options, stop.</summary>
[CancelAfter(120_000)]
public class TargetApiTests
{
    [Test]
    public async Task Sessions_list_initiator_target_peer_volumes_and_digests()
    {
        await using var f = await TargetFixture.StartAsync();
        await f.Pool.CreateVolumeAsync("listed", 16L << 20);
        await using var c = await RawInitiator.ConnectAsync(f.Port);
        Assert.That(await c.LoginAsync(TargetFixture.Iqn("listed"), "iqn.2026-11.test:lister"), Is.Zero);
        var s = f.Target.Sessions.Single(x => !x.Discovery);
        Assert.Multiple(() =>
        {
            Assert.That(s.InitiatorName, Is.EqualTo("iqn.2026-11.test:lister"));
            Assert.That(s.TargetName, Is.EqualTo(TargetFixture.Iqn("listed")));
            Assert.That(s.Volumes, Is.EqualTo(new[] { "listed" }));
            Assert.That(((IPEndPoint)s.Peer!).Address, Is.EqualTo(IPAddress.Loopback));
            Assert.That(s.HeaderDigest, Is.False);
            Assert.That(s.Since, Is.GreaterThan(DateTimeOffset.UtcNow.AddMinutes(-1)));
        });
        // WRITE(10) of one 4 KiB block at LBA 0, then READ(10) of it: the logout line counts both.
        var w = await c.CommandAsync([0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0], writeData: new byte[4096]);
        Assert.That(w!.Status, Is.Zero);
        var r = await c.CommandAsync([0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], readLength: 4096);
        Assert.That(r!.Status, Is.Zero);
        await c.LogoutAsync();
        var until = DateTime.UtcNow.AddSeconds(5);
        while (f.Target.Sessions.Count > 0 && DateTime.UtcNow < until)
        {
            await Task.Delay(20);
        }
        Assert.That(f.Target.Sessions, Is.Empty, "logout ends the session");
        Assert.That(f.Logs.All, Does.Contain("iSCSI logout: iqn.2026-11.test:lister"));
        Assert.That(f.Logs.All, Does.Match(@"left target \S+:listed after \d+\.\d s: 2 commands, 4096 bytes read, 4096 bytes written"));
    }

    [Test]
    public async Task Disconnect_volume_closes_the_sessions_that_use_it()
    {
        await using var f = await TargetFixture.StartAsync();
        await f.Pool.CreateVolumeAsync("doomed", 16L << 20);
        await f.Pool.CreateVolumeAsync("other", 16L << 20);
        await using var a = await RawInitiator.ConnectAsync(f.Port);
        await using var b = await RawInitiator.ConnectAsync(f.Port);
        Assert.That(await a.LoginAsync(TargetFixture.Iqn("doomed"), "iqn.2026-11.test:a"), Is.Zero);
        Assert.That(await b.LoginAsync(TargetFixture.Iqn("other"), "iqn.2026-11.test:b"), Is.Zero);
        Assert.That(f.Target.DisconnectVolume("doomed"), Is.EqualTo(1));
        Assert.That(await a.ClosedByTargetAsync(TimeSpan.FromSeconds(5)), Is.True);
        var r = await b.CommandAsync([0, 0, 0, 0, 0, 0]);
        Assert.That(r!.Status, Is.Zero, "other sessions are untouched");
    }

    [Test]
    public async Task Volumes_created_and_deleted_while_running_come_and_go_without_a_restart()
    {
        await using var f = await TargetFixture.StartAsync();
        await using (var early = await RawInitiator.ConnectAsync(f.Port))
        {
            Assert.That(await early.LoginAsync(TargetFixture.Iqn("late")), Is.EqualTo(0x0203), "not found yet");
        }
        await f.Pool.CreateVolumeAsync("late", 16L << 20);
        await using (var c = await RawInitiator.ConnectAsync(f.Port))
        {
            Assert.That(await c.LoginAsync(TargetFixture.Iqn("LATE")), Is.Zero, "found, matched case-insensitively");
        }
        var discovery = await DiscoverAsync(f.Port);
        Assert.That(discovery, Does.Contain($"TargetName={TargetFixture.Iqn("late")}"));
        Assert.That(discovery, Does.Contain($"TargetAddress=127.0.0.1:{f.Port},1"));
        await f.Pool.DeleteVolumeAsync("late");
        await using (var gone = await RawInitiator.ConnectAsync(f.Port))
        {
            Assert.That(await gone.LoginAsync(TargetFixture.Iqn("late")), Is.EqualTo(0x0203));
        }
        Assert.That(await DiscoverAsync(f.Port), Does.Not.Contain("late"));
    }

    [Test]
    public async Task Names_map_to_iqn_suffixes_and_colliding_names_are_refused()
    {
        await using var f = await TargetFixture.StartAsync();
        await f.Pool.CreateVolumeAsync("Db_Data", 16L << 20);
        await f.Pool.CreateSnapshotAsync("Db_Data", "nightly");
        await f.Pool.CreateVolumeAsync("a_b", 16L << 20);
        await f.Pool.CreateVolumeAsync("a-b", 16L << 20);
        Assert.That(TargetFixture.Iqn("Db_Data@nightly"), Is.EqualTo("iqn.2026-11.io.ballast:db-data.nightly"));
        await using (var c = await RawInitiator.ConnectAsync(f.Port))
        {
            Assert.That(await c.LoginAsync("iqn.2026-11.io.ballast:db-data.nightly"), Is.Zero, "the snapshot is a target");
            var w = await c.CommandAsync(Cdb.Write10(0, 1), writeData: new byte[4096]);
            Assert.That((w!.Status, w.SenseKey, w.Asc), Is.EqualTo(((byte)2, (byte)7, (byte)0x27)), "read-only: DATA PROTECT, WRITE PROTECTED");
        }
        await using (var c = await RawInitiator.ConnectAsync(f.Port))
        {
            Assert.That(await c.LoginAsync("iqn.2026-11.io.ballast:a-b"), Is.EqualTo(0x0203));
        }
        Assert.That(f.Logs.All, Does.Contain("both map to iqn.2026-11.io.ballast:a-b"));
        var discovery = await DiscoverAsync(f.Port);
        Assert.That(discovery, Does.Not.Contain("iqn.2026-11.io.ballast:a-b"), "colliding names are not advertised");
    }

    [Test]
    public async Task A_group_target_carries_its_volumes_as_luns_in_order()
    {
        await using var f = await TargetFixture.StartAsync(x => x.Defaults(groups: [new IscsiGroupTarget { Name = "cluster", Volumes = ["g0", "g1", "g2"] }]));
        await f.Pool.CreateVolumeAsync("g0", 16L << 20, 512);
        await f.Pool.CreateVolumeAsync("g1", 32L << 20, 512);
        await f.Pool.CreateVolumeAsync("g2", 48L << 20, 512);
        await using var c = await RawInitiator.ConnectAsync(f.Port);
        Assert.That(await c.LoginAsync(TargetFixture.Iqn("cluster")), Is.Zero);
        var luns = await c.CommandAsync([0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0], readLength: 256);
        Assert.That(luns!.Data[3], Is.EqualTo(24), "three LUNs");
        Assert.That(new[] { luns.Data[9], luns.Data[17], luns.Data[25] }, Is.EqualTo(new byte[] { 0, 1, 2 }));
        for (var lun = 0; lun < 3; lun++)
        {
            var cap = await c.CommandAsync([0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], readLength: 8, lun: (ulong)lun << 48);
            var blocks = System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(cap!.Data) + 1;
            Assert.That(blocks * 512L, Is.EqualTo((16L << 20) * (lun + 1)));
        }
        Assert.That(f.Target.Sessions.Single().Volumes, Is.EqualTo(new[] { "g0", "g1", "g2" }));
    }

    [Test]
    public void Invalid_options_are_refused_naming_the_option()
    {
        static async Task Start(IscsiTargetOptions o)
        {
            await using var t = new IscsiTarget(o, new EmptyDirectory(), new CapturingLoggerFactory());
            await t.StartAsync(CancellationToken.None);
        }
        Assert.Multiple(() =>
        {
            Assert.That(() => Start(new IscsiTargetOptions { IqnPrefix = "Not An IQN" }), Throws.ArgumentException.With.Message.Contains("IqnPrefix"));
            Assert.That(() => Start(new IscsiTargetOptions { MaxRecvDataSegmentLength = 100 }), Throws.ArgumentException.With.Message.Contains("MaxRecvDataSegmentLength"));
            Assert.That(() => Start(new IscsiTargetOptions { FirstBurstLength = 1 << 22, MaxBurstLength = 1 << 20 }), Throws.ArgumentException.With.Message.Contains("FirstBurstLength"));
            Assert.That(() => Start(new IscsiTargetOptions { Chap = new ChapSecret("u", "") }), Throws.ArgumentException.With.Message.Contains("Chap"));
            Assert.That(() => Start(new IscsiTargetOptions { Listen = [] }), Throws.ArgumentException.With.Message.Contains("Listen"));
            Assert.That(() => Start(new IscsiTargetOptions { Groups = [new IscsiGroupTarget { Name = "bad name", Volumes = ["x"] }] }), Throws.ArgumentException.With.Message.Contains("Groups"));
        });
    }

    [Test]
    public async Task Start_fails_naming_an_address_that_cannot_be_bound()
    {
        using var busy = new TcpListener(IPAddress.Loopback, 0);
        busy.Start();
        var port = ((IPEndPoint)busy.LocalEndpoint).Port;
        await using var t = new IscsiTarget(new IscsiTargetOptions { Listen = [new IPEndPoint(IPAddress.Loopback, 0), new IPEndPoint(IPAddress.Loopback, port)] },
            new EmptyDirectory(), new CapturingLoggerFactory());
        Assert.That(() => t.StartAsync(CancellationToken.None), Throws.InstanceOf<IOException>().With.Message.Contains($"127.0.0.1:{port}"));
    }

    [Test]
    public async Task Wildcard_portals_are_advertised_with_the_connection_address()
    {
        await using var f = await TargetFixture.StartAsync(x => x.Defaults() is var o ? new IscsiTargetOptions { Listen = [new IPEndPoint(IPAddress.Any, 0)], StateDirectory = o.StateDirectory } : null!);
        await f.Pool.CreateVolumeAsync("wild", 16L << 20);
        var discovery = await DiscoverAsync(f.Port);
        Assert.That(discovery, Does.Contain($"TargetAddress=127.0.0.1:{f.Port},1"));
    }

    [Test]
    public async Task A_dead_initiator_is_pinged_and_then_disconnected()
    {
        await using var f = await TargetFixture.StartAsync(x => x.Defaults(nopInterval: TimeSpan.FromSeconds(1), nopTimeout: TimeSpan.FromSeconds(1)));
        await using var c = await f.LoginToNewVolumeAsync("quiet", 16L << 20);
        var ping = await c.ReadAsync(TimeSpan.FromSeconds(5));
        Assert.That(ping!.Value.Header[0] & 0x3f, Is.EqualTo(0x20), "NOP-In");
        Assert.That(RawInitiator.Get32(ping.Value.Header, 16), Is.EqualTo(0xffffffffu), "target-initiated: ITT reserved");
        Assert.That(RawInitiator.Get32(ping.Value.Header, 20), Is.Not.EqualTo(0xffffffffu), "asks for an answer");
        // We do not answer: the target gives up on us.
        Assert.That(await c.ClosedByTargetAsync(TimeSpan.FromSeconds(6)), Is.True);
        Assert.That(f.Logs.All, Does.Contain("did not answer a NOP-In"));
    }

    [Test]
    public async Task An_answered_ping_keeps_an_idle_session_alive()
    {
        await using var f = await TargetFixture.StartAsync(x => x.Defaults(nopInterval: TimeSpan.FromSeconds(1), nopTimeout: TimeSpan.FromSeconds(1)));
        await using var c = await f.LoginToNewVolumeAsync("idle", 16L << 20);
        for (var i = 0; i < 3; i++)
        {
            var ping = await c.ReadAsync(TimeSpan.FromSeconds(5));
            Assert.That(ping!.Value.Header[0] & 0x3f, Is.EqualTo(0x20));
            var answer = RawInitiator.Header(0x40, 0x80);
            RawInitiator.Put32(answer, 16, 0xffffffff);
            RawInitiator.Put32(answer, 20, RawInitiator.Get32(ping.Value.Header, 20));
            RawInitiator.Put32(answer, 24, c.CmdSn);
            await c.SendAsync(answer);
        }
        var r = await c.CommandAsync([0, 0, 0, 0, 0, 0]);
        Assert.That(r!.Status, Is.Zero);
    }

    [Test]
    public async Task Stop_lets_running_commands_finish_and_closes_sessions()
    {
        await using var f = await TargetFixture.StartAsync();
        await using var c = await f.LoginToNewVolumeAsync("stopping", 64L << 20, 512);
        var done = await c.CommandAsync(Cdb.Write10(0, 8), writeData: new byte[4096]);
        Assert.That(done!.Status, Is.Zero);
        var write = c.CommandAsync(Cdb.Write10(0, 2048), writeData: new byte[1 << 20]);
        await f.StopTargetAsync();
        try
        {
            await write; // it may complete or see the connection close mid-transfer
        }
        catch (IOException)
        {
        }
        Assert.That(await c.ClosedByTargetAsync(TimeSpan.FromSeconds(5)), Is.True);
        Assert.That(f.Target.Sessions, Is.Empty);
        Assert.That(() => new TcpClient().Connect(IPAddress.Loopback, f.Port), Throws.InstanceOf<SocketException>(), "no longer listening");
        await f.StartTargetAsync(); // DisposeAsync stops it again
    }

    [Test]
    public async Task A_long_send_targets_answer_comes_in_pieces_the_initiator_asks_for()
    {
        await using var f = await TargetFixture.StartAsync();
        for (var i = 0; i < 120; i++)
        {
            await f.Pool.CreateVolumeAsync($"volume-with-a-rather-long-name-{i:000}", 1 << 20);
        }
        await using var d = await RawInitiator.ConnectAsync(f.Port);
        Assert.That(await d.LoginAsync(null, "iqn.2026-11.test:disc", "MaxRecvDataSegmentLength=4096"), Is.Zero);
        var text = RawInitiator.Text("SendTargets=All");
        var itt = d.NextItt();
        var h = RawInitiator.Header(0x44, 0x80, text.Length);
        RawInitiator.Put32(h, 16, itt);
        RawInitiator.Put32(h, 20, 0xffffffff);
        RawInitiator.Put32(h, 24, d.CmdSn++);
        await d.SendAsync(h, text);
        var all = new List<byte>();
        var pieces = 0;
        while (true)
        {
            var r = await d.ReadAsync() ?? throw new IOException("closed");
            pieces++;
            Assert.That(r.Data.Length, Is.LessThanOrEqualTo(4096), "never more than the initiator's MaxRecvDataSegmentLength");
            all.AddRange(r.Data);
            if ((r.Header[1] & 0x80) != 0)
            {
                break;
            }
            Assert.That(r.Header[1] & 0x40, Is.EqualTo(0x40), "C bit: more to come");
            var next = RawInitiator.Header(0x44, 0x80);
            RawInitiator.Put32(next, 16, itt);
            RawInitiator.Put32(next, 20, RawInitiator.Get32(r.Header, 20)); // the target's TTT
            RawInitiator.Put32(next, 24, d.CmdSn++);
            await d.SendAsync(next);
        }
        var names = System.Text.Encoding.UTF8.GetString([.. all]).Split('\0').Count(x => x.StartsWith("TargetName=", StringComparison.Ordinal));
        Assert.That(pieces, Is.GreaterThan(1));
        Assert.That(names, Is.EqualTo(120));
    }

    internal static async Task<string> DiscoverAsync(int port)
    {
        await using var d = await RawInitiator.ConnectAsync(port);
        Assert.That(await d.LoginAsync(null), Is.Zero);
        var text = RawInitiator.Text("SendTargets=All");
        var h = RawInitiator.Header(0x44, 0x80, text.Length);
        RawInitiator.Put32(h, 16, d.NextItt());
        RawInitiator.Put32(h, 20, 0xffffffff);
        RawInitiator.Put32(h, 24, d.CmdSn++);
        await d.SendAsync(h, text);
        var r = await d.ReadAsync();
        return System.Text.Encoding.UTF8.GetString(r!.Value.Data).Replace('\0', '\n');
    }

    private sealed class EmptyDirectory : Ballast.Engine.Volumes.IVolumeDirectory
    {
        public Ballast.Engine.Volumes.IBlockVolume? Find(string name) => null;
        public IReadOnlyList<Ballast.Engine.Volumes.VolumeListing> List() => [];
    }
}
