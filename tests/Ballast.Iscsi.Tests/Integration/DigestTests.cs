using Ballast.Iscsi.Tests.Support;
using static Ballast.Iscsi.Tests.Support.RawInitiator;

namespace Ballast.Iscsi.Tests.Integration;

/// <summary>CRC32C header and data digests on the wire (RFC 7143 §13.1, error handling §7.8).</summary>
[CancelAfter(60_000)]
public class DigestTests
{
    private static async Task<RawInitiator> DigestSessionAsync(TargetFixture f)
    {
        var c = await ConnectAsync(f.Port);
        Assert.That(await c.LoginAsync(TargetFixture.Iqn("digests"), "iqn.2026-11.test:crc", "HeaderDigest=CRC32C", "DataDigest=CRC32C"), Is.Zero);
        Assert.That((c.LoginKeys["HeaderDigest"], c.LoginKeys["DataDigest"]), Is.EqualTo(("CRC32C", "CRC32C")));
        c.HeaderDigest = c.DataDigest = true;
        return c;
    }

    [Test]
    public async Task Commands_with_crc32c_digests_round_trip_data()
    {
        await using var f = await TargetFixture.StartAsync();
        await f.Pool.CreateVolumeAsync("digests", 16L << 20, 512);
        await using var c = await DigestSessionAsync(f);
        var data = new byte[64 * 1024 + 3 * 512];
        new Random(9).NextBytes(data);
        var w = await c.CommandAsync(Cdb.Write10(5, (ushort)(data.Length / 512)), writeData: data);
        Assert.That(w!.Status, Is.Zero);
        var r = await c.CommandAsync(Cdb.Read10(5, (ushort)(data.Length / 512)), readLength: data.Length);
        Assert.That(r!.Data, Is.EqualTo(data), "every PDU from the target carried valid digests (the client checks them)");
        Assert.That(f.Target.Sessions.Single().HeaderDigest && f.Target.Sessions.Single().DataDigest, Is.True);
    }

    [Test]
    public async Task A_bad_data_digest_gets_a_reject_and_the_command_fails()
    {
        await using var f = await TargetFixture.StartAsync();
        await f.Pool.CreateVolumeAsync("digests", 16L << 20, 512);
        await using var c = await DigestSessionAsync(f);
        c.CorruptNextDataDigest = true;
        await c.SendAsync(c.WriteCommand(Cdb.Write10(0, 1), 512), new byte[512]);
        var reject = await c.ReadAsync();
        Assert.That((reject!.Value.Header[0] & 0x3f, reject.Value.Header[2]), Is.EqualTo((0x3f, (byte)0x02)), "Reject: data digest error");
        var response = await c.ReadAsync();
        Assert.That(response!.Value.Header[3], Is.EqualTo(0x02), "CHECK CONDITION");
        var r = await c.CommandAsync([0, 0, 0, 0, 0, 0]);
        Assert.That(r!.Status, Is.Zero, "the connection goes on");
    }

    [Test]
    public async Task A_bad_header_digest_closes_the_connection()
    {
        await using var f = await TargetFixture.StartAsync();
        await f.Pool.CreateVolumeAsync("digests", 16L << 20, 512);
        await using var c = await DigestSessionAsync(f);
        var h = Header(0x01, 0x80);
        Put32(h, 16, c.NextItt());
        Put32(h, 24, c.CmdSn++);
        var bytes = new byte[52];
        h.CopyTo(bytes, 0);
        bytes[48] = 0xde; // not the CRC32C of the header
        await c.SendRawAsync(bytes);
        Assert.That(await c.ClosedByTargetAsync(TimeSpan.FromSeconds(5)), Is.True);
        Assert.That(f.Logs.All, Does.Contain("header digest mismatch"));
    }

    [Test]
    public async Task Nop_out_pings_are_echoed()
    {
        await using var f = await TargetFixture.StartAsync();
        await f.Pool.CreateVolumeAsync("digests", 16L << 20, 512);
        await using var c = await DigestSessionAsync(f);
        var payload = "ping from the initiator"u8.ToArray();
        var h = Header(0x40, 0x80, payload.Length);
        Put32(h, 16, 0x4242);
        Put32(h, 20, 0xffffffff);
        Put32(h, 24, c.CmdSn);
        await c.SendAsync(h, payload);
        var r = await c.ReadAsync();
        Assert.That(r!.Value.Header[0] & 0x3f, Is.EqualTo(0x20));
        Assert.That(Get32(r.Value.Header, 16), Is.EqualTo(0x4242u));
        Assert.That(r.Value.Data, Is.EqualTo(payload));
    }
}
