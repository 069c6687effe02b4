using System.Buffers.Binary;
using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using Ballast.Nbd.Tests.Support;
using Ballast.TestSupport;
using static Ballast.TestSupport.NbdRawClient;

namespace Ballast.Nbd.Tests.Handshake;

/// <summary>STARTTLS in the "on" (selective) and "require" (forced) modes, with a CA made for the test.</summary>
[CancelAfter(60_000)]
public class TlsTests
{
    private string _dir = null!;
    private X509Certificate2 _serverCert = null!;

    [OneTimeSetUp]
    public void MakeCertificates()
    {
        _dir = Path.Combine(Path.GetTempPath(), "ballast-tls-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(_dir);
        using var caKey = RSA.Create(2048);
        var caReq = new CertificateRequest("CN=Ballast test CA", caKey, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        caReq.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        caReq.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        using var ca = caReq.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(30));

        using var key = RSA.Create(2048);
        var req = new CertificateRequest("CN=localhost", key, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        var san = new SubjectAlternativeNameBuilder();
        san.AddDnsName("localhost");
        san.AddIpAddress(IPAddress.Loopback);
        req.CertificateExtensions.Add(san.Build());
        req.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], false));
        req.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature | X509KeyUsageFlags.KeyEncipherment, true));
        using var signed = req.Create(ca, DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(29), [1, 2, 3, 4]);
        _serverCert = signed.CopyWithPrivateKey(key);
        File.WriteAllText(Path.Combine(_dir, "ca-cert.pem"), ca.ExportCertificatePem());
    }

    [OneTimeTearDown]
    public void Cleanup()
    {
        _serverCert.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    private Task<TestServer> StartAsync(NbdTlsMode mode) => TestServer.StartAsync(o => o with { Tls = mode, TlsCertificate = _serverCert });

    [Test]
    public async Task Forced_tls_refuses_every_option_but_starttls_and_abort(CancellationToken ct)
    {
        await using var server = await StartAsync(NbdTlsMode.Require);
        await using var c = await HandshakeAsync(server.Endpoint, ct: ct);
        foreach (var (opt, data) in new[] { (OptList, Array.Empty<byte>()), (OptInfo, InfoData("v1")), (OptGo, InfoData("v1")), (OptStructuredReply, []), (999u, []) })
        {
            await c.SendOptionAsync(opt, data, ct);
            var r = await c.ReadOptionReplyAsync(ct);
            Assert.That(r.Type, Is.EqualTo(ErrTlsReqd), $"option {opt}");
        }
        await c.SendOptionAsync(OptAbort, [], ct);
        Assert.That((await c.ReadOptionReplyAsync(ct)).Type, Is.EqualTo(RepAck));
    }

    [Test]
    public async Task Forced_tls_closes_on_export_name_before_tls(CancellationToken ct)
    {
        await using var server = await StartAsync(NbdTlsMode.Require);
        await using var c = await HandshakeAsync(server.Endpoint, ct: ct);
        await c.SendOptionAsync(OptExportName, Encoding.UTF8.GetBytes("v1"), ct);
        Assert.That(await c.IsClosedAsync(TimeSpan.FromSeconds(5)), Is.True);
    }

    [Test]
    public async Task After_starttls_the_session_negotiates_and_transfers_over_tls(CancellationToken ct)
    {
        await using var server = await StartAsync(NbdTlsMode.Require);
        await using var c = await HandshakeAsync(server.Endpoint, ct: ct);
        await c.SendOptionAsync(OptStartTls, [], ct);
        Assert.That((await c.ReadOptionReplyAsync(ct)).Type, Is.EqualTo(RepAck));
        await c.StartTlsAsync(ct);
        await c.SendOptionAsync(OptStartTls, [], ct);
        Assert.That((await c.ReadOptionReplyAsync(ct)).Type, Is.EqualTo(ErrInvalid), "a second STARTTLS");
        await c.SendOptionAsync(OptGo, InfoData("v1"), ct);
        Assert.That((await c.ReadOptionReplyAsync(ct)).Type, Is.EqualTo(RepInfo));
        Assert.That((await c.ReadOptionReplyAsync(ct)).Type, Is.EqualTo(RepAck));
        var data = Enumerable.Range(0, 8192).Select(i => (byte)i).ToArray();
        await c.SendRequestAsync(0, CmdWrite, 1, 4096, 8192, data, ct);
        Assert.That((await c.ReadSimpleReplyAsync(0, ct)).Error, Is.Zero);
        await c.SendRequestAsync(0, CmdRead, 2, 4096, 8192, ct: ct);
        Assert.That((await c.ReadSimpleReplyAsync(8192, ct)).Data, Is.EqualTo(data));
        Assert.That(server.Server.Connections.Single().Tls, Is.True);
    }

    [Test]
    public async Task Starttls_forgets_structured_replies_negotiated_before_it(CancellationToken ct)
    {
        await using var server = await StartAsync(NbdTlsMode.On);
        await using var c = await HandshakeAsync(server.Endpoint, ct: ct);
        await c.SendOptionAsync(OptStructuredReply, [], ct);
        Assert.That((await c.ReadOptionReplyAsync(ct)).Type, Is.EqualTo(RepAck));
        await c.SendOptionAsync(OptStartTls, [], ct);
        Assert.That((await c.ReadOptionReplyAsync(ct)).Type, Is.EqualTo(RepAck));
        await c.StartTlsAsync(ct);
        await c.SendOptionAsync(OptGo, InfoData("v1"), ct);
        var info = await c.ReadOptionReplyAsync(ct);
        Assert.That(BinaryPrimitives.ReadUInt16BigEndian(info.Data.AsSpan(10)) & (1 << 7), Is.Zero, "no SEND_DF: structured replies were reset");
        await c.ReadOptionReplyAsync(ct);
        await c.SendRequestAsync(0, CmdRead, 3, 0, 512, ct: ct);
        var r = await c.ReadReplyAsync(ct);
        Assert.That(r.Simple, Is.True);
    }

    [Test]
    public async Task Data_queued_behind_starttls_ends_the_session(CancellationToken ct)
    {
        await using var server = await StartAsync(NbdTlsMode.On);
        await using var c = await HandshakeAsync(server.Endpoint, ct: ct);
        // STARTTLS and, in the same write, a plain-text option an attacker wants read as if it came over TLS.
        var ms = new MemoryStream();
        foreach (var (opt, data) in new[] { (OptStartTls, Array.Empty<byte>()), (OptList, Array.Empty<byte>()) })
        {
            var h = new byte[16];
            BinaryPrimitives.WriteUInt64BigEndian(h, IHaveOpt);
            BinaryPrimitives.WriteUInt32BigEndian(h.AsSpan(8), opt);
            ms.Write(h);
            ms.Write(data);
        }
        await c.Stream.WriteAsync(ms.ToArray(), ct);
        Assert.That(await c.IsClosedAsync(TimeSpan.FromSeconds(5)), Is.True);
        Assert.That(server.Log.Contains("data queued behind NBD_OPT_STARTTLS"), Is.True);
    }

    [Test]
    public async Task Nbdinfo_connects_over_tls_and_verifies_the_certificate()
    {
        await using var server = await StartAsync(NbdTlsMode.Require);
        var nbdinfo = Tool.Require("nbdinfo", "libnbd-bin");
        var r = await Tool.RunOkAsync(nbdinfo, ["--json", $"nbds://127.0.0.1:{server.Port}/v1?tls-certificates={_dir}"], TimeSpan.FromSeconds(60));
        using var doc = JsonDocument.Parse(r.Stdout);
        Assert.That(doc.RootElement.GetProperty("TLS").GetBoolean(), Is.True);
        Assert.That(doc.RootElement.GetProperty("exports")[0].GetProperty("export-size").GetInt64(), Is.EqualTo(64L << 20));
        // Without TLS the forced server answers nothing useful.
        var plain = await Tool.RunAsync(nbdinfo, [server.Uri("v1")], TimeSpan.FromSeconds(60));
        Assert.That(plain.ExitCode, Is.Not.Zero);
    }
}
