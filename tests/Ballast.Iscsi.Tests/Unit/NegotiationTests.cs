using System.Text;
using Ballast.Iscsi.Negotiation;

namespace Ballast.Iscsi.Tests.Unit;

public class NegotiationTests
{
    private static (Negotiator N, Dictionary<string, string> Answers) Negotiate(bool discovery = false, IscsiTargetOptions? options = null, params (string Key, string Value)[] offers)
    {
        var n = new Negotiator(options ?? new IscsiTargetOptions(), discovery);
        var answers = new Dictionary<string, string>();
        foreach (var (k, v) in offers)
        {
            Assert.That(n.Process(k, v, (a, b) => answers[a] = b), Is.True, n.Error);
        }
        n.Finish();
        return (n, answers);
    }

    [TestCase("CRC32C,None", "CRC32C", true)]
    [TestCase("None,CRC32C", "None", false)]
    [TestCase("None", "None", false)]
    [TestCase("CRC32C", "CRC32C", true)]
    [TestCase("Foo", "Reject", false)]
    public void Digests_pick_the_first_value_we_support(string offer, string answer, bool crc)
    {
        var (n, a) = Negotiate(offers: [("HeaderDigest", offer), ("DataDigest", offer)]);
        Assert.Multiple(() =>
        {
            Assert.That(a["HeaderDigest"], Is.EqualTo(answer));
            Assert.That(a["DataDigest"], Is.EqualTo(answer));
            Assert.That(n.Parameters.HeaderDigest, Is.EqualTo(crc));
            Assert.That(n.Parameters.DataDigest, Is.EqualTo(crc));
        });
    }

    [Test]
    public void Digests_are_refused_when_disabled_by_the_options()
    {
        var (_, a) = Negotiate(options: new IscsiTargetOptions { AllowDigests = false }, offers: [("HeaderDigest", "CRC32C")]);
        Assert.That(a["HeaderDigest"], Is.EqualTo("Reject"));
    }

    [Test]
    public void Numeric_keys_take_the_minimum_and_declare_our_receive_limit()
    {
        var (n, a) = Negotiate(offers: [("MaxBurstLength", "16776192"), ("FirstBurstLength", "65536"), ("MaxOutstandingR2T", "64"),
            ("MaxConnections", "8"), ("ErrorRecoveryLevel", "2"), ("DefaultTime2Retain", "20"), ("DefaultTime2Wait", "1"), ("MaxRecvDataSegmentLength", "65536")]);
        Assert.Multiple(() =>
        {
            Assert.That(a["MaxBurstLength"], Is.EqualTo("1048576"));
            Assert.That(a["FirstBurstLength"], Is.EqualTo("65536"));
            Assert.That(a["MaxOutstandingR2T"], Is.EqualTo("16"));
            Assert.That(a["MaxConnections"], Is.EqualTo("1"));
            Assert.That(a["ErrorRecoveryLevel"], Is.EqualTo("0"));
            Assert.That(a["DefaultTime2Retain"], Is.EqualTo("0"));
            Assert.That(a["DefaultTime2Wait"], Is.EqualTo("2"), "maximum");
            Assert.That(a["MaxRecvDataSegmentLength"], Is.EqualTo("262144"), "our declaration");
            Assert.That(n.Parameters.InitiatorMaxRecvDataSegmentLength, Is.EqualTo(65536));
        });
    }

    [Test]
    public void Boolean_keys_use_and_or_results()
    {
        var (n, a) = Negotiate(offers: [("InitialR2T", "No"), ("ImmediateData", "Yes"), ("DataPDUInOrder", "No"), ("DataSequenceInOrder", "No")]);
        Assert.Multiple(() =>
        {
            Assert.That(a["InitialR2T"], Is.EqualTo("No"), "OR with our No");
            Assert.That(a["ImmediateData"], Is.EqualTo("Yes"), "AND with our Yes");
            Assert.That(a["DataPDUInOrder"], Is.EqualTo("Yes"), "OR with our Yes");
            Assert.That(a["DataSequenceInOrder"], Is.EqualTo("Yes"));
            Assert.That(n.Parameters.InitialR2T, Is.False);
        });
        var (_, b) = Negotiate(offers: [("InitialR2T", "Yes"), ("ImmediateData", "No")]);
        Assert.That((b["InitialR2T"], b["ImmediateData"]), Is.EqualTo(("Yes", "No")));
    }

    [TestCase("MaxBurstLength", "100")]
    [TestCase("MaxBurstLength", "16777216")]
    [TestCase("MaxBurstLength", "-5")]
    [TestCase("MaxBurstLength", "12ab")]
    [TestCase("MaxOutstandingR2T", "0")]
    [TestCase("ImmediateData", "Maybe")]
    [TestCase("MaxRecvDataSegmentLength", "511")]
    [TestCase("DefaultTime2Wait", "3601")]
    [TestCase("TaskReporting", "FastAbort")]
    public void Out_of_range_values_are_answered_reject(string key, string value)
    {
        var (_, a) = Negotiate(offers: [(key, value)]);
        Assert.That(a[key], Is.EqualTo("Reject"));
    }

    [Test]
    public void Unknown_and_extension_keys_are_not_understood()
    {
        var (_, a) = Negotiate(offers: [("X-com.example.Foo", "1"), ("FooBar", "2"), ("X#Something", "3")]);
        Assert.That(a.Values, Is.All.EqualTo("NotUnderstood"));
    }

    [Test]
    public void Session_keys_are_irrelevant_in_discovery()
    {
        var (_, a) = Negotiate(discovery: true, offers: [("MaxBurstLength", "65536"), ("InitialR2T", "Yes"), ("MaxConnections", "1")]);
        Assert.That(a.Values, Is.All.EqualTo("Irrelevant"));
    }

    [Test]
    public void First_burst_never_exceeds_max_burst()
    {
        var (n, _) = Negotiate(offers: [("MaxBurstLength", "65536"), ("FirstBurstLength", "262144")]);
        Assert.That(n.Parameters.FirstBurstLength, Is.EqualTo(65536));
    }

    [Test]
    public void A_key_offered_twice_fails_the_login()
    {
        var n = new Negotiator(new IscsiTargetOptions(), false);
        Assert.That(n.Process("MaxBurstLength", "65536", (_, _) => { }), Is.True);
        Assert.That(n.Process("MaxBurstLength", "65536", (_, _) => { }), Is.False);
        Assert.That(n.Error, Does.Contain("twice"));
    }

    [Test]
    public void Target_only_keys_from_the_initiator_fail_the_login()
    {
        var n = new Negotiator(new IscsiTargetOptions(), false);
        Assert.That(n.Process("TargetAddress", "1.2.3.4:3260,1", (_, _) => { }), Is.False);
    }

    [Test]
    public void Values_longer_than_255_bytes_fail_the_login()
    {
        var n = new Negotiator(new IscsiTargetOptions(), false);
        Assert.That(n.Process("InitiatorAlias", new string('a', 256), (_, _) => { }), Is.False);
    }

    [Test]
    public void Obsolete_marker_keys_are_answered_no()
    {
        var (_, a) = Negotiate(offers: [("IFMarker", "Yes"), ("OFMarker", "No"), ("OFMarkInt", "1~65535")]);
        Assert.Multiple(() =>
        {
            Assert.That(a["IFMarker"], Is.EqualTo("No"));
            Assert.That(a["OFMarker"], Is.EqualTo("No"));
            Assert.That(a["OFMarkInt"], Is.EqualTo("Irrelevant"));
        });
    }

    [Test]
    public void Text_pairs_parse_and_malformed_text_is_refused()
    {
        var pairs = new List<KeyValuePair<string, string>>();
        Assert.That(TextKeys.TryParse(Encoding.UTF8.GetBytes("A=1\0B=\0\0\0"), pairs, out _), Is.True);
        Assert.That(pairs, Is.EqualTo(new[] { new KeyValuePair<string, string>("A", "1"), new KeyValuePair<string, string>("B", "") }));
        Assert.Multiple(() =>
        {
            Assert.That(TextKeys.TryParse(Encoding.UTF8.GetBytes("A=1"), [], out var e1), Is.False, "no NUL");
            Assert.That(TextKeys.TryParse(Encoding.UTF8.GetBytes("=1\0"), [], out _), Is.False, "no key");
            Assert.That(TextKeys.TryParse(Encoding.UTF8.GetBytes("A\0"), [], out _), Is.False, "no =");
            Assert.That(TextKeys.TryParse(Encoding.UTF8.GetBytes(new string('K', 64) + "=1\0"), [], out _), Is.False, "key > 63 bytes");
            Assert.That(TextKeys.TryParse(Encoding.UTF8.GetBytes("K=" + new string('v', 8200) + "\0"), [], out var e2), Is.False, "pair > 8192 bytes");
            Assert.That(TextKeys.TryParse([0x41, 0x3d, 0xff, 0xfe, 0], [], out _), Is.False, "not UTF-8");
        });
    }
}
