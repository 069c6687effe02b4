using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Ballast.Iscsi.Tests.Support;
using static Ballast.Iscsi.Tests.Support.RawInitiator;

namespace Ballast.Iscsi.Tests.Integration;

/// <summary>
/// Malformed and hostile input over raw sockets: each case gets a Reject, a sense code or a closed
/// connection, and a session on another volume keeps doing verified I/O throughout.
/// </summary>
[NonParallelizable]
[CancelAfter(120_000)]
public class BadInputTests
{
    private const string Secret = "guarded-secret-1";
    private TargetFixture _f = null!;
    private Canary _canary = null!;
    private long _before;

    [OneTimeSetUp]
    public async Task Start()
    {
        _f = await TargetFixture.StartAsync(x => x.Defaults(targetChap: new Dictionary<string, ChapSecret> { ["guarded"] = new("raw-user", Secret) }));
        await _f.Pool.CreateVolumeAsync("victim", 64L << 20, 512);
        await _f.Pool.CreateVolumeAsync("canary", 64L << 20, 512);
        await _f.Pool.CreateVolumeAsync("guarded", 16L << 20, 512);
        _canary = await Canary.StartAsync(_f.Port, "canary");
    }

    [OneTimeTearDown]
    public async Task Stop()
    {
        await _canary.DisposeAsync();
        await _f.DisposeAsync();
    }

    [SetUp]
    public void Mark() => _before = _canary.Operations;

    [TearDown]
    public async Task CanaryStillServed() => await _canary.AssertAliveSinceAsync(_before);

    private Task<RawInitiator> LoggedInAsync(string volume = "victim") => _f.LoginAsync(volume);

    private static async Task AssertStillServesAsync(RawInitiator c)
    {
        var r = await c.CommandAsync([0, 0, 0, 0, 0, 0]);
        Assert.That(r, Is.Not.Null, "the connection still works");
        Assert.That(r!.Status, Is.Zero);
    }

    private static byte[] Command(RawInitiator c, byte[] cdb, int dsl, uint edtl, byte flags = 0xa1)
    {
        var h = Header(0x01, flags, dsl);
        Put32(h, 16, c.NextItt());
        Put32(h, 20, edtl);
        Put32(h, 24, c.CmdSn++);
        Put32(h, 28, c.ExpStatSn);
        cdb.CopyTo(h, 32);
        return h;
    }

    [Test]
    public async Task Data_segment_longer_than_max_recv_data_segment_length_is_rejected_and_closed()
    {
        await using var c = await LoggedInAsync();
        var length = c.TargetMaxRecv + 4096;
        await c.SendAsync(Command(c, Cdb.Write10(0, 16), length, (uint)length), new byte[length]);
        var r = await c.ReadAsync();
        Assert.That(r, Is.Not.Null);
        Assert.That(r!.Value.Header[0] & 0x3f, Is.EqualTo(0x3f), "Reject");
        Assert.That(r.Value.Header[2], Is.EqualTo(0x04), "protocol error");
        Assert.That(await c.ClosedByTargetAsync(TimeSpan.FromSeconds(5)), Is.True);
    }

    [Test]
    public async Task Ahs_length_that_overflows_closes_the_connection()
    {
        await using var c = await LoggedInAsync();
        var h = Command(c, [0, 0, 0, 0, 0, 0], 0, 0, 0x80);
        h[4] = 1; // TotalAHSLength: one word
        await c.SendAsync(h, ahs: [0x01, 0x00, 0x01, 0x00]); // AHSLength 256 in a 4-byte AHS
        Assert.That(await c.ClosedByTargetAsync(TimeSpan.FromSeconds(5)), Is.True);
    }

    [Test]
    public async Task Cmdsn_far_outside_the_window_is_ignored_and_the_session_goes_on()
    {
        await using var c = await LoggedInAsync();
        var good = c.CmdSn;
        c.CmdSn = good + 1_000_000;
        await c.SendAsync(Command(c, [0, 0, 0, 0, 0, 0], 0, 0, 0x80));
        Assert.That(await c.ReadAsync(TimeSpan.FromSeconds(1)), Is.Null, "silently ignored (RFC 7143 §4.2.2.1)");
        c.CmdSn = good;
        await AssertStillServesAsync(c);
    }

    [Test]
    public async Task Data_out_for_an_unknown_task_is_rejected()
    {
        await using var c = await LoggedInAsync();
        var d = Header(0x05, 0x80, 512);
        Put32(d, 16, 0x7777);
        Put32(d, 20, 0x1234);
        await c.SendAsync(d, new byte[512]);
        var r = await c.ReadAsync();
        Assert.That(r!.Value.Header[0] & 0x3f, Is.EqualTo(0x3f));
        Assert.That(r.Value.Header[2], Is.EqualTo(0x09), "invalid PDU field");
        Assert.That(r.Value.Data[..48], Is.EqualTo(d), "the reject carries the offending header");
        await AssertStillServesAsync(c);
    }

    [Test]
    public async Task Data_out_out_of_sequence_fails_the_command_but_not_the_connection()
    {
        await using var c = await LoggedInAsync();
        // WRITE(10) of 8 KiB with no immediate data and F set: everything is solicited by R2T.
        var h = Command(c, Cdb.Write10(0, 16), 0, 8192, 0xa1);
        var itt = Get32(h, 16);
        await c.SendAsync(h);
        var r2t = await c.ReadAsync();
        Assert.That(r2t!.Value.Header[0] & 0x3f, Is.EqualTo(0x31));
        var d = Header(0x05, 0x80, 8192);
        Put32(d, 16, itt);
        Put32(d, 20, Get32(r2t.Value.Header, 20));
        Put32(d, 36, 5); // DataSN should be 0
        await c.SendAsync(d, new byte[8192]);
        (byte[] Header, byte[] Data)? response = null;
        for (var i = 0; i < 3 && response is null; i++)
        {
            var p = await c.ReadAsync();
            if (p is { } x && (x.Header[0] & 0x3f) == 0x21)
            {
                response = x;
            }
        }
        Assert.That(response, Is.Not.Null);
        Assert.That(response!.Value.Header[3], Is.EqualTo(0x02), "CHECK CONDITION");
        Assert.That(response.Value.Data[2 + 2] & 0x0f, Is.EqualTo(0x0b), "ABORTED COMMAND");
        await AssertStillServesAsync(c);
    }

    [Test]
    public async Task A_command_before_login_is_refused_as_invalid_during_login()
    {
        await using var c = await ConnectAsync(_f.Port);
        await c.SendAsync(Command(c, [0, 0, 0, 0, 0, 0], 0, 0, 0x80));
        var r = await c.ReadAsync();
        Assert.That(r!.Value.Header[0] & 0x3f, Is.EqualTo(0x23));
        Assert.That((r.Value.Header[36], r.Value.Header[37]), Is.EqualTo(((byte)0x02, (byte)0x0b)));
        Assert.That(await c.ClosedByTargetAsync(TimeSpan.FromSeconds(5)), Is.True);
    }

    private static byte[] Login(byte flags, byte[] text, uint itt = 1)
    {
        var h = Header(0x43, flags, text.Length);
        h[8] = 0x80;
        h[13] = 0x07;
        Put32(h, 16, itt);
        return h;
    }

    private static async Task<(byte Class, byte Detail, Dictionary<string, string> Keys)> LoginStepAsync(RawInitiator c, byte flags, params string[] keys)
    {
        var text = Text(keys);
        await c.SendAsync(Login(flags, text), text);
        var r = await c.ReadAsync() ?? throw new IOException("no login response");
        return (r.Header[36], r.Header[37], ParseText(r.Data));
    }

    [Test]
    public async Task A_login_stage_going_backwards_is_an_initiator_error()
    {
        await using var c = await ConnectAsync(_f.Port);
        // CSG=1 -> NSG=0 with T set.
        var (cls, detail, _) = await LoginStepAsync(c, 0x80 | (1 << 2) | 0, "InitiatorName=iqn.2026-11.test:x", $"TargetName={TargetFixture.Iqn("victim")}");
        Assert.That((cls, detail), Is.EqualTo(((byte)2, (byte)0)));
        Assert.That(await c.ClosedByTargetAsync(TimeSpan.FromSeconds(5)), Is.True);
    }

    [Test]
    public async Task A_login_request_in_full_feature_phase_is_rejected_and_closed()
    {
        await using var c = await LoggedInAsync();
        var text = Text("InitiatorName=iqn.2026-11.test:x");
        await c.SendAsync(Login(0x80 | (1 << 2) | 3, text, 99), text);
        var r = await c.ReadAsync();
        Assert.That(r!.Value.Header[0] & 0x3f, Is.EqualTo(0x3f));
        Assert.That(await c.ClosedByTargetAsync(TimeSpan.FromSeconds(5)), Is.True);
    }

    [Test]
    public async Task An_unknown_target_is_not_found_and_a_missing_initiator_name_is_a_missing_parameter()
    {
        await using (var c = await ConnectAsync(_f.Port))
        {
            var (cls, detail, _) = await LoginStepAsync(c, 0x80 | (1 << 2) | 3, "InitiatorName=iqn.2026-11.test:x", "TargetName=iqn.2026-11.io.ballast:nope");
            Assert.That((cls, detail), Is.EqualTo(((byte)2, (byte)3)));
        }
        await using (var c = await ConnectAsync(_f.Port))
        {
            var (cls, detail, _) = await LoginStepAsync(c, 0x80 | (1 << 2) | 3, $"TargetName={TargetFixture.Iqn("victim")}");
            Assert.That((cls, detail), Is.EqualTo(((byte)2, (byte)7)));
        }
    }

    [Test]
    public async Task Skipping_security_on_a_chap_target_is_an_authentication_failure()
    {
        await using var c = await ConnectAsync(_f.Port);
        var (cls, detail, _) = await LoginStepAsync(c, 0x80 | (1 << 2) | 3, "InitiatorName=iqn.2026-11.test:x", $"TargetName={TargetFixture.Iqn("guarded")}");
        Assert.That((cls, detail), Is.EqualTo(((byte)2, (byte)1)));
        Assert.That(await c.ClosedByTargetAsync(TimeSpan.FromSeconds(5)), Is.True);
    }

    [TestCase("0xnot-hex-at-all", TestName = "An_undecodable_chap_response_is_refused")]
    [TestCase("0b!!!!", TestName = "An_undecodable_base64_chap_response_is_refused")]
    [TestCase("oversized", TestName = "A_chap_response_over_1024_bytes_is_refused")]
    public async Task Bad_chap_responses_are_refused(string response)
    {
        if (response == "oversized")
        {
            response = "0x" + new string('a', 2 * 1100);
        }
        await using var c = await ConnectAsync(_f.Port);
        var (_, _, keys) = await LoginStepAsync(c, 0x00 | (0 << 2) | 1, "InitiatorName=iqn.2026-11.test:x", $"TargetName={TargetFixture.Iqn("guarded")}", "AuthMethod=CHAP");
        Assert.That(keys["AuthMethod"], Is.EqualTo("CHAP"));
        (_, _, keys) = await LoginStepAsync(c, 0x00, "CHAP_A=5");
        Assert.That(keys, Does.ContainKey("CHAP_C"));
        var (cls, detail, _) = await LoginStepAsync(c, 0x80 | 1, "CHAP_N=raw-user", $"CHAP_R={response}");
        Assert.That((cls, detail), Is.EqualTo(((byte)2, (byte)1)), "authentication failure");
        Assert.That(await c.ClosedByTargetAsync(TimeSpan.FromSeconds(5)), Is.True);
        Assert.That(_f.Logs.All, Does.Not.Contain(Secret));
    }

    [Test]
    public async Task A_reflected_chap_challenge_is_refused()
    {
        await using var c = await ConnectAsync(_f.Port);
        await LoginStepAsync(c, 0x01, "InitiatorName=iqn.2026-11.test:x", $"TargetName={TargetFixture.Iqn("guarded")}", "AuthMethod=CHAP");
        var (_, _, keys) = await LoginStepAsync(c, 0x00, "CHAP_A=5");
        var id = byte.Parse(keys["CHAP_I"]);
        Chap.ChapValue.TryDecode(keys["CHAP_C"], out var challenge);
        var good = Chap.ChapValue.EncodeHex(Chap.ChapAuthenticator.Response(id, Secret, challenge));
        var (cls, detail, _) = await LoginStepAsync(c, 0x80 | 1, "CHAP_N=raw-user", $"CHAP_R={good}", "CHAP_I=1", $"CHAP_C={keys["CHAP_C"]}");
        Assert.That((cls, detail), Is.EqualTo(((byte)2, (byte)1)));
    }

    [Test]
    public async Task A_login_text_pair_longer_than_8192_bytes_fails_the_login()
    {
        await using var c = await ConnectAsync(_f.Port);
        var text = Text("InitiatorName=iqn.2026-11.test:x", $"TargetName={TargetFixture.Iqn("victim")}", "X-com.example.Big=" + new string('v', 9000));
        // Split over two PDUs with the C bit (each under the 8192-byte login limit).
        await c.SendAsync(Login(0x40 | (1 << 2), text[..8000]), text[..8000]);
        var first = await c.ReadAsync();
        Assert.That(first!.Value.Header[36], Is.Zero, "continue acknowledged");
        await c.SendAsync(Login(0x80 | (1 << 2) | 3, text[8000..]), text[8000..]);
        var r = await c.ReadAsync();
        Assert.That((r!.Value.Header[36], r.Value.Header[37]), Is.EqualTo(((byte)2, (byte)0)));
        Assert.That(await c.ClosedByTargetAsync(TimeSpan.FromSeconds(5)), Is.True);
    }

    [Test]
    public async Task A_text_request_pair_longer_than_8192_bytes_is_rejected()
    {
        await using var c = await LoggedInAsync();
        var text = Text("X-com.example.Big=" + new string('v', 9000));
        var h = Header(0x44, 0x80, text.Length);
        Put32(h, 16, c.NextItt());
        Put32(h, 20, 0xffffffff);
        Put32(h, 24, c.CmdSn++);
        await c.SendAsync(h, text);
        var r = await c.ReadAsync();
        Assert.That(r!.Value.Header[0] & 0x3f, Is.EqualTo(0x3f));
        await AssertStillServesAsync(c);
    }

    [Test]
    public async Task Unsupported_opcodes_and_lba_out_of_range_get_sense_over_the_wire()
    {
        await using var c = await LoggedInAsync();
        var r = await c.CommandAsync([0xc5, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        Assert.That((r!.Status, r.SenseKey, r.Asc), Is.EqualTo(((byte)2, (byte)5, (byte)0x20)));
        var big = await c.CommandAsync(Cdb.Read16(ulong.MaxValue - 3, 8), readLength: 4096);
        Assert.That((big!.Status, big.SenseKey, big.Asc), Is.EqualTo(((byte)2, (byte)5, (byte)0x21)));
        var nolun = await c.CommandAsync([0, 0, 0, 0, 0, 0], lun: 5UL << 48);
        Assert.That((nolun!.Status, nolun.SenseKey, nolun.Asc), Is.EqualTo(((byte)2, (byte)5, (byte)0x25)));
    }

    [Test]
    public async Task A_thousand_connections_that_never_log_in_are_capped_and_timed_out()
    {
        await using var f = await TargetFixture.StartAsync(x => x.Defaults(loginTimeout: TimeSpan.FromSeconds(2), maxConnections: 64));
        await f.Pool.CreateVolumeAsync("busy", 16L << 20, 512);
        await using var canary = await Canary.StartAsync(f.Port, "busy");
        var before = canary.Operations;
        var sockets = new List<Socket>();
        try
        {
            for (var i = 0; i < 1000; i++)
            {
                var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                try
                {
                    await s.ConnectAsync(IPAddress.Loopback, f.Port);
                }
                catch (SocketException)
                {
                    s.Dispose();
                    continue;
                }
                sockets.Add(s);
            }
            // Connections over the limit are closed at accept; the rest when the login timeout passes.
            var deadline = DateTime.UtcNow.AddSeconds(20);
            int open;
            do
            {
                await Task.Delay(250);
                open = sockets.Count(s => !IsClosed(s));
            }
            while (open > 0 && DateTime.UtcNow < deadline);
            Assert.That(open, Is.Zero, "every idle connection was closed");
        }
        finally
        {
            foreach (var s in sockets)
            {
                s.Dispose();
            }
        }
        await canary.AssertAliveSinceAsync(before);
        await using var late = await ConnectAsync(f.Port);
        Assert.That(await late.LoginAsync(TargetFixture.Iqn("busy"), "iqn.2026-11.test:late"), Is.Zero, "a new initiator logs in afterwards");
        Assert.That(f.Logs.All, Does.Contain("did not log in within").And.Contain("connections are open"));
    }

    /// <summary>
    /// Logged-in sessions send random PDUs: any opcode, random header fields, SCSI commands
    /// with random CDBs, data segments cut short or longer than negotiated. Every answer is a
    /// PDU a target may send; the sessions end; the volume, the canary and the pool go on.
    /// </summary>
    [Test]
    public async Task Random_pdus_after_login_get_target_pdus_or_a_close()
    {
        var rng = new Random(20261125);
        var answers = 0;
        var closedByTarget = 0;
        var sessionsBefore = _f.Target.Sessions.Count;
        var errorsBefore = _f.Logs.Lines.Count(l => l.StartsWith("Error:"));
        for (var round = 0; round < 150; round++)
        {
            await using var c = await LoggedInAsync();
            var whole = true;
            try
            {
                for (var n = rng.Next(1, 10); n > 0 && whole; n--)
                {
                    whole = await SendRandomPduAsync(c, rng);
                }
            }
            catch (IOException)
            {
                // The target closed while we were sending: allowed after a bad PDU.
            }
            // Read until the target closes or falls quiet (it waits for data we never send).
            while (await c.ReadAsync(TimeSpan.FromMilliseconds(whole ? 300 : 150)) is { } pdu)
            {
                var op = pdu.Header[0] & 0x3f;
                Assert.That(op, Is.AnyOf(0x20, 0x21, 0x22, 0x24, 0x25, 0x26, 0x31, 0x32, 0x3f), $"round {round}: opcode 0x{op:x2} is one a target sends in full feature phase");
                answers++;
            }
            closedByTarget += await c.ClosedByTargetAsync(TimeSpan.FromMilliseconds(1)) ? 1 : 0;
        }
        TestContext.Progress.WriteLine($"150 rounds: {answers} PDUs from the target, {closedByTarget} connections it closed");
        Assert.That(answers, Is.GreaterThan(150), "the target answered the random PDUs");
        Assert.That(closedByTarget, Is.GreaterThan(0), "some were bad enough to close the connection");
        // Bad input is a warning at most: an error line means an exception nobody expected.
        var errors = _f.Logs.Lines.Where(l => l.StartsWith("Error:")).Skip(errorsBefore).ToList();
        Assert.That(errors, Is.Empty);

        await using (var after = await LoggedInAsync())
        {
            await AssertStillServesAsync(after);
            var r = await after.CommandAsync(Read10(0, 8), readLength: 4096);
            Assert.That(r!.Status, Is.Zero, "the volume still reads");
        }
        Assert.That(_f.Pool.GetStats().Poisoned, Is.False);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (_f.Target.Sessions.Count > sessionsBefore && DateTime.UtcNow < deadline)
        {
            await Task.Delay(50);
        }
        Assert.That(_f.Target.Sessions, Has.Count.EqualTo(sessionsBefore), "every fuzzed session ended");
    }

    private static readonly byte[] FuzzOpcodes = [0x00, 0x01, 0x01, 0x01, 0x01, 0x02, 0x04, 0x05, 0x05, 0x06, 0x10];
    private static readonly byte[] FuzzCdbOpcodes = [0x00, 0x03, 0x12, 0x1a, 0x25, 0x28, 0x28, 0x2a, 0x2a, 0x35, 0x42, 0x5a, 0x88, 0x89, 0x8a, 0x91, 0x93, 0x9e, 0xa0, 0xa3];

    /// <summary>Sends one random PDU; false when it was sent cut short (the stream is mid-PDU).</summary>
    private static async Task<bool> SendRandomPduAsync(RawInitiator c, Random rng)
    {
        var op = rng.Next(12) == 0 ? (byte)rng.Next(0x40) : FuzzOpcodes[rng.Next(FuzzOpcodes.Length)];
        var dataLength = rng.Next(10) switch
        {
            < 5 => 0,
            < 9 => rng.Next(1, 8192),
            _ => rng.Next(1 << 24),
        };
        var h = Header((byte)(op | (rng.Next(2) == 0 ? 0x40 : 0)), (byte)rng.Next(256), dataLength);
        rng.NextBytes(h.AsSpan(8, 40));
        if (rng.Next(4) > 0)
        {
            h[1] |= 0x80;
            h.AsSpan(8, 8).Clear();
        }
        if (op == 0x01)
        {
            // A SCSI command: a plausible CDB most of the time, in range of the 64 MiB volume.
            var cdb = h.AsSpan(32, 16);
            cdb[0] = rng.Next(8) == 0 ? (byte)rng.Next(256) : FuzzCdbOpcodes[rng.Next(FuzzCdbOpcodes.Length)];
            if (rng.Next(2) == 0)
            {
                cdb[1..].Clear();
                BinaryPrimitives.WriteUInt32BigEndian(cdb[2..], (uint)rng.Next(1 << 17));
                cdb[8] = (byte)rng.Next(1, 64);
            }
            Put32(h, 16, c.NextItt());
            Put32(h, 20, rng.Next(3) == 0 ? (uint)rng.Next() : (uint)rng.Next(1 << 16));
        }
        if (rng.Next(5) > 0)
        {
            Put32(h, 24, c.CmdSn++);
            Put32(h, 28, c.ExpStatSn);
        }
        h[4] = rng.Next(10) == 0 ? (byte)rng.Next(256) : (byte)0;
        var whole = dataLength <= 8192 && h[4] == 0;
        var data = new byte[whole ? dataLength : rng.Next(8192)];
        rng.NextBytes(data);
        if (whole)
        {
            await c.SendAsync(h, data);
        }
        else
        {
            await c.SendRawAsync([.. h, .. data]);
        }
        return whole;
    }

    private static bool IsClosed(Socket s)
    {
        try
        {
            return s.Poll(0, SelectMode.SelectRead) && s.Available == 0;
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            return true;
        }
    }
}
