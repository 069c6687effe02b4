using System.Buffers.Binary;
using System.Text;
using Ballast.Nbd.Tests.Support;
using Ballast.TestSupport;
using static Ballast.TestSupport.NbdRawClient;

namespace Ballast.Nbd.Tests.Handshake;

/// <summary>Option haggling, one behaviour per test, including the wrong order and malformed options.</summary>
[CancelAfter(30_000)]
public class HandshakeTests
{
    private TestServer _server = null!;

    [SetUp]
    public async Task SetUp() => _server = await TestServer.StartAsync(o => o with { DefaultExport = "v2", HandshakeTimeout = TimeSpan.FromSeconds(5) });

    [TearDown]
    public async Task TearDown() => await _server.DisposeAsync();

    [Test]
    public async Task Server_greets_with_fixed_newstyle_and_no_zeroes(CancellationToken ct)
    {
        await using var c = await ConnectAsync(_server.Endpoint, ct);
        var (magic, opt, flags) = await c.ReadGreetingAsync(ct);
        Assert.That(magic, Is.EqualTo(InitPasswd));
        Assert.That(opt, Is.EqualTo(IHaveOpt));
        Assert.That(flags, Is.EqualTo(3));
    }

    [Test]
    public async Task Unknown_client_flags_close_the_connection(CancellationToken ct)
    {
        await using var c = await ConnectAsync(_server.Endpoint, ct);
        await c.ReadGreetingAsync(ct);
        await c.SendU32Async(1 | 0x100, ct);
        Assert.That(await c.IsClosedAsync(TimeSpan.FromSeconds(5)), Is.True);
    }

    [Test]
    public async Task An_option_without_the_IHAVEOPT_magic_closes_the_connection(CancellationToken ct)
    {
        await using var c = await HandshakeAsync(_server.Endpoint, ct: ct);
        await c.SendOptionAsync(OptList, [], ct, magic: 0x1122334455667788);
        Assert.That(await c.IsClosedAsync(TimeSpan.FromSeconds(5)), Is.True);
    }

    [TestCase(true)]
    [TestCase(false)]
    public async Task Export_name_answers_size_and_flags_with_zero_padding_unless_declined(bool noZeroes)
    {
        await using var c = await HandshakeAsync(_server.Endpoint, noZeroes);
        await c.SendOptionAsync(OptExportName, Encoding.UTF8.GetBytes("v1"));
        var reply = await c.ReadAsync(noZeroes ? 10 : 134);
        Assert.That(BinaryPrimitives.ReadUInt64BigEndian(reply), Is.EqualTo(64UL << 20));
        var flags = BinaryPrimitives.ReadUInt16BigEndian(reply.AsSpan(8));
        Assert.That(flags & 1, Is.EqualTo(1), "HAS_FLAGS");
        Assert.That(flags & (1 << 2 | 1 << 3 | 1 << 5 | 1 << 6), Is.EqualTo(1 << 2 | 1 << 3 | 1 << 5 | 1 << 6), "FLUSH, FUA, TRIM, WRITE_ZEROES");
        Assert.That(flags & (1 << 7), Is.Zero, "no SEND_DF without structured replies");
        if (!noZeroes)
        {
            Assert.That(reply.AsSpan(10).ContainsAnyExcept((byte)0), Is.False);
        }
        // Now in transmission: a flush works.
        await c.SendRequestAsync(0, CmdFlush, 7, 0, 0);
        var r = await c.ReadSimpleReplyAsync();
        Assert.That((r.Error, r.Cookie), Is.EqualTo((0u, 7UL)));
    }

    [Test]
    public async Task Export_name_of_an_unknown_export_closes_the_connection(CancellationToken ct)
    {
        await using var c = await HandshakeAsync(_server.Endpoint, ct: ct);
        await c.SendOptionAsync(OptExportName, Encoding.UTF8.GetBytes("nope"), ct);
        Assert.That(await c.IsClosedAsync(TimeSpan.FromSeconds(5)), Is.True);
    }

    [Test]
    public async Task Abort_is_acknowledged_and_the_connection_closed(CancellationToken ct)
    {
        await using var c = await HandshakeAsync(_server.Endpoint, ct: ct);
        await c.SendOptionAsync(OptAbort, [], ct);
        var r = await c.ReadOptionReplyAsync(ct);
        Assert.That((r.Option, r.Type), Is.EqualTo((OptAbort, RepAck)));
        Assert.That(await c.IsClosedAsync(TimeSpan.FromSeconds(5)), Is.True);
    }

    [Test]
    public async Task List_names_every_volume_and_snapshot(CancellationToken ct)
    {
        await using var c = await HandshakeAsync(_server.Endpoint, ct: ct);
        await c.SendOptionAsync(OptList, [], ct);
        var names = new List<string>();
        while (true)
        {
            var r = await c.ReadOptionReplyAsync(ct);
            if (r.Type == RepAck)
            {
                break;
            }
            Assert.That(r.Type, Is.EqualTo(RepServer));
            var len = (int)BinaryPrimitives.ReadUInt32BigEndian(r.Data);
            names.Add(Encoding.UTF8.GetString(r.Data, 4, len));
        }
        Assert.That(names, Is.EquivalentTo(new[] { "v1", "v1@snap", "v2" }));
    }

    [Test]
    public async Task List_with_data_is_invalid(CancellationToken ct)
    {
        await using var c = await HandshakeAsync(_server.Endpoint, ct: ct);
        await c.SendOptionAsync(OptList, [1, 2, 3], ct);
        Assert.That((await c.ReadOptionReplyAsync(ct)).Type, Is.EqualTo(ErrInvalid));
        // The session goes on after an error reply.
        await c.SendOptionAsync(OptList, [], ct);
        Assert.That((await c.ReadOptionReplyAsync(ct)).Type, Is.EqualTo(RepServer));
    }

    [Test]
    public async Task Info_reports_export_name_description_and_block_size(CancellationToken ct)
    {
        await using var c = await HandshakeAsync(_server.Endpoint, ct: ct);
        await c.SendOptionAsync(OptInfo, InfoData("v1", 1, 2, 3), ct);
        var infos = new Dictionary<ushort, byte[]>();
        while (true)
        {
            var r = await c.ReadOptionReplyAsync(ct);
            if (r.Type == RepAck)
            {
                break;
            }
            Assert.That(r.Type, Is.EqualTo(RepInfo));
            infos[BinaryPrimitives.ReadUInt16BigEndian(r.Data)] = r.Data[2..];
        }
        Assert.That(infos.Keys, Is.EquivalentTo(new ushort[] { 0, 1, 2, 3 }));
        Assert.That(BinaryPrimitives.ReadUInt64BigEndian(infos[0]), Is.EqualTo(64UL << 20));
        Assert.That(Encoding.UTF8.GetString(infos[1]), Is.EqualTo("v1"));
        Assert.That(Encoding.UTF8.GetString(infos[2]), Does.Contain("GiB").Or.Contain("volume"));
        Assert.That(BinaryPrimitives.ReadUInt32BigEndian(infos[3]), Is.EqualTo(1), "minimum");
        Assert.That(BinaryPrimitives.ReadUInt32BigEndian(infos[3].AsSpan(4)), Is.EqualTo(4096), "preferred");
        Assert.That(BinaryPrimitives.ReadUInt32BigEndian(infos[3].AsSpan(8)), Is.EqualTo(32u << 20), "maximum");
        // INFO does not end the handshake.
        await c.SendOptionAsync(OptList, [], ct);
        Assert.That((await c.ReadOptionReplyAsync(ct)).Type, Is.EqualTo(RepServer));
    }

    [Test]
    public async Task Info_for_an_unknown_export_is_ERR_UNKNOWN(CancellationToken ct)
    {
        await using var c = await HandshakeAsync(_server.Endpoint, ct: ct);
        await c.SendOptionAsync(OptInfo, InfoData("missing"), ct);
        var r = await c.ReadOptionReplyAsync(ct);
        Assert.That(r.Type, Is.EqualTo(ErrUnknown));
        Assert.That(Encoding.UTF8.GetString(r.Data), Does.Contain("missing"));
    }

    [Test]
    public async Task The_default_export_name_maps_to_the_configured_volume(CancellationToken ct)
    {
        await using var c = await HandshakeAsync(_server.Endpoint, ct: ct);
        await c.SendOptionAsync(OptInfo, InfoData("", 1), ct);
        var export = await c.ReadOptionReplyAsync(ct);
        Assert.That(BinaryPrimitives.ReadUInt64BigEndian(export.Data.AsSpan(2)), Is.EqualTo(16UL << 20));
        var name = await c.ReadOptionReplyAsync(ct);
        Assert.That(Encoding.UTF8.GetString(name.Data, 2, name.Data.Length - 2), Is.EqualTo("v2"));
    }

    [Test]
    public async Task Info_with_a_name_length_past_the_option_is_invalid(CancellationToken ct)
    {
        await using var c = await HandshakeAsync(_server.Endpoint, ct: ct);
        var data = InfoData("v1");
        BinaryPrimitives.WriteUInt32BigEndian(data, 1000);
        await c.SendOptionAsync(OptInfo, data, ct);
        Assert.That((await c.ReadOptionReplyAsync(ct)).Type, Is.EqualTo(ErrInvalid));
    }

    [Test]
    public async Task Info_with_a_request_count_that_does_not_match_the_data_is_invalid(CancellationToken ct)
    {
        await using var c = await HandshakeAsync(_server.Endpoint, ct: ct);
        var data = InfoData("v1", 1);
        BinaryPrimitives.WriteUInt16BigEndian(data.AsSpan(6), 5);
        await c.SendOptionAsync(OptInfo, data, ct);
        Assert.That((await c.ReadOptionReplyAsync(ct)).Type, Is.EqualTo(ErrInvalid));
    }

    [Test]
    public async Task A_name_longer_than_4096_bytes_is_refused(CancellationToken ct)
    {
        await using var c = await HandshakeAsync(_server.Endpoint, ct: ct);
        await c.SendOptionAsync(OptInfo, InfoData(new string('a', 5000)), ct);
        Assert.That((await c.ReadOptionReplyAsync(ct)).Type, Is.EqualTo(ErrInvalid));
        await c.SendOptionAsync(OptExportName, Encoding.UTF8.GetBytes(new string('a', 5000)), ct);
        Assert.That(await c.IsClosedAsync(TimeSpan.FromSeconds(5)), Is.True);
    }

    [Test]
    public async Task A_name_with_a_NUL_or_invalid_UTF8_is_refused(CancellationToken ct)
    {
        await using var c = await HandshakeAsync(_server.Endpoint, ct: ct);
        var nul = InfoData("v1");
        nul[5] = 0;
        await c.SendOptionAsync(OptInfo, nul, ct);
        Assert.That((await c.ReadOptionReplyAsync(ct)).Type, Is.EqualTo(ErrInvalid));
        var bad = InfoData("v1");
        bad[4] = 0xff;
        await c.SendOptionAsync(OptInfo, bad, ct);
        Assert.That((await c.ReadOptionReplyAsync(ct)).Type, Is.EqualTo(ErrInvalid));
    }

    [Test]
    public async Task Structured_reply_with_data_is_invalid_and_twice_is_invalid(CancellationToken ct)
    {
        await using var c = await HandshakeAsync(_server.Endpoint, ct: ct);
        await c.SendOptionAsync(OptStructuredReply, [0], ct);
        Assert.That((await c.ReadOptionReplyAsync(ct)).Type, Is.EqualTo(ErrInvalid));
        await c.SendOptionAsync(OptStructuredReply, [], ct);
        Assert.That((await c.ReadOptionReplyAsync(ct)).Type, Is.EqualTo(RepAck));
        await c.SendOptionAsync(OptStructuredReply, [], ct);
        Assert.That((await c.ReadOptionReplyAsync(ct)).Type, Is.EqualTo(ErrInvalid));
    }

    [Test]
    public async Task Meta_context_before_structured_replies_is_invalid(CancellationToken ct)
    {
        await using var c = await HandshakeAsync(_server.Endpoint, ct: ct);
        await c.SendOptionAsync(OptSetMetaContext, MetaContextData("v1", "base:allocation"), ct);
        Assert.That((await c.ReadOptionReplyAsync(ct)).Type, Is.EqualTo(ErrInvalid));
    }

    [Test]
    public async Task Meta_contexts_list_and_select_base_allocation_only(CancellationToken ct)
    {
        await using var c = await HandshakeAsync(_server.Endpoint, ct: ct);
        await c.SendOptionAsync(OptStructuredReply, [], ct);
        await c.ReadOptionReplyAsync(ct);

        await c.SendOptionAsync(OptListMetaContext, MetaContextData("v1"), ct);
        var listed = await c.ReadOptionReplyAsync(ct);
        Assert.That(listed.Type, Is.EqualTo(RepMetaContext));
        Assert.That(Encoding.UTF8.GetString(listed.Data, 4, listed.Data.Length - 4), Is.EqualTo("base:allocation"));
        Assert.That((await c.ReadOptionReplyAsync(ct)).Type, Is.EqualTo(RepAck));

        // Unknown namespaces are ignored; "base:" selects nothing during SET.
        await c.SendOptionAsync(OptSetMetaContext, MetaContextData("v1", "x-other:thing", "base:"), ct);
        Assert.That((await c.ReadOptionReplyAsync(ct)).Type, Is.EqualTo(RepAck));

        await c.SendOptionAsync(OptSetMetaContext, MetaContextData("v1", "base:allocation"), ct);
        var selected = await c.ReadOptionReplyAsync(ct);
        Assert.That(selected.Type, Is.EqualTo(RepMetaContext));
        Assert.That(BinaryPrimitives.ReadUInt32BigEndian(selected.Data), Is.Not.Zero, "a context id");
        Assert.That((await c.ReadOptionReplyAsync(ct)).Type, Is.EqualTo(RepAck));
    }

    [Test]
    public async Task Meta_context_with_a_query_length_past_the_option_is_invalid(CancellationToken ct)
    {
        await using var c = await HandshakeAsync(_server.Endpoint, ct: ct);
        await c.SendOptionAsync(OptStructuredReply, [], ct);
        await c.ReadOptionReplyAsync(ct);
        var data = MetaContextData("v1", "base:allocation");
        BinaryPrimitives.WriteUInt32BigEndian(data.AsSpan(data.Length - 19), 9999);
        await c.SendOptionAsync(OptSetMetaContext, data, ct);
        Assert.That((await c.ReadOptionReplyAsync(ct)).Type, Is.EqualTo(ErrInvalid));
    }

    [TestCase(4u)]
    [TestCase(11u)]
    [TestCase(999u)]
    public async Task Unknown_options_are_unsupported(uint option)
    {
        await using var c = await HandshakeAsync(_server.Endpoint);
        await c.SendOptionAsync(option, [1, 2, 3, 4]);
        var r = await c.ReadOptionReplyAsync();
        Assert.That((r.Option, r.Type), Is.EqualTo((option, ErrUnsup)));
    }

    [Test]
    public async Task Starttls_without_tls_configured_is_refused_by_policy(CancellationToken ct)
    {
        await using var c = await HandshakeAsync(_server.Endpoint, ct: ct);
        await c.SendOptionAsync(OptStartTls, [], ct);
        Assert.That((await c.ReadOptionReplyAsync(ct)).Type, Is.EqualTo(ErrPolicy));
    }

    [Test]
    public async Task An_oversized_option_gets_ERR_TOO_BIG_and_a_huge_one_closes(CancellationToken ct)
    {
        await using var c = await HandshakeAsync(_server.Endpoint, ct: ct);
        await c.SendOptionAsync(OptList, new byte[100_000], ct);
        Assert.That((await c.ReadOptionReplyAsync(ct)).Type, Is.EqualTo(ErrTooBig));
        await c.SendOptionAsync(OptList, [], ct, lengthOverride: 0x7fffffff);
        Assert.That(await c.IsClosedAsync(TimeSpan.FromSeconds(5)), Is.True);
    }

    [Test]
    public async Task A_client_without_fixed_newstyle_may_only_send_export_name(CancellationToken ct)
    {
        await using var c = await ConnectAsync(_server.Endpoint, ct);
        await c.ReadGreetingAsync(ct);
        await c.SendU32Async(0, ct);
        await c.SendOptionAsync(OptList, [], ct);
        Assert.That(await c.IsClosedAsync(TimeSpan.FromSeconds(5)), Is.True);
    }

    [Test]
    public async Task Go_enters_transmission_with_the_negotiated_flags(CancellationToken ct)
    {
        var (c, size, flags) = await OpenAsync(_server.Endpoint, "v1@snap", structured: true, ct: ct);
        await using (c)
        {
            Assert.That(size, Is.EqualTo(64UL << 20));
            Assert.That(flags & 2, Is.EqualTo(2), "READ_ONLY for a snapshot");
            Assert.That(flags & (1 << 5 | 1 << 6), Is.Zero, "no TRIM or WRITE_ZEROES on a read-only export");
            Assert.That(flags & (1 << 7), Is.Not.Zero, "SEND_DF with structured replies");
            Assert.That(flags & (1 << 8), Is.Not.Zero, "CAN_MULTI_CONN");
            await c.SendRequestAsync(0, CmdRead, 1, 0, 4096, ct: ct);
            var r = await c.ReadReplyAsync(ct);
            Assert.That(r.Type, Is.EqualTo(1), "OFFSET_DATA");
            Assert.That(r.Payload.AsSpan(8).ToArray(), Is.All.EqualTo(0x5a));
        }
    }

    [Test]
    public async Task A_client_that_stalls_in_the_handshake_is_closed_after_the_timeout(CancellationToken ct)
    {
        await using var c = await ConnectAsync(_server.Endpoint, ct);
        await c.ReadGreetingAsync(ct);
        Assert.That(await c.IsClosedAsync(TimeSpan.FromSeconds(15)), Is.True);
        Assert.That(_server.Log.Contains("timed out"), Is.True);
    }
}
