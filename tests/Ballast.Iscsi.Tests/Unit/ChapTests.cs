using System.Security.Cryptography;
using Ballast.Iscsi.Chap;

namespace Ballast.Iscsi.Tests.Unit;

public class ChapTests
{
    private static readonly ChapSecret Initiator = new("alice", "initiator-secret");
    private static readonly ChapSecret TargetCredentials = new("ballast", "target-secret-1");

    private static (ChapAuthenticator Chap, byte Id, byte[] Challenge) Challenge(ChapSecret? mutual = null)
    {
        var chap = new ChapAuthenticator(Initiator, mutual);
        var sent = new Dictionary<string, string>();
        Assert.That(chap.OnAlgorithm("7,5", (k, v) => sent[k] = v, out _), Is.True);
        Assert.That(sent["CHAP_A"], Is.EqualTo("5"));
        Assert.That(ChapValue.TryDecode(sent["CHAP_C"], out var c), Is.True);
        return (chap, byte.Parse(sent["CHAP_I"]), c);
    }

    private static string Md5Hex(byte id, string secret, byte[] challenge) => ChapValue.EncodeHex(ChapAuthenticator.Response(id, secret, challenge));

    [Test]
    public void Correct_response_authenticates()
    {
        var (chap, id, c) = Challenge();
        Assert.That(chap.OnResponse("alice", Md5Hex(id, Initiator.Secret, c), null, null, (_, _) => { }, out var e), Is.True, e);
        Assert.That(chap.User, Is.EqualTo("alice"));
    }

    [Test]
    public void Response_is_md5_of_id_secret_and_challenge()
    {
        var expected = MD5.HashData([7, .. "secret"u8.ToArray(), 1, 2, 3]);
        Assert.That(ChapAuthenticator.Response(7, "secret", [1, 2, 3]), Is.EqualTo(expected));
    }

    [Test]
    public void Base64_responses_are_accepted()
    {
        var (chap, id, c) = Challenge();
        var r = "0b" + Convert.ToBase64String(ChapAuthenticator.Response(id, Initiator.Secret, c));
        Assert.That(chap.OnResponse("alice", r, null, null, (_, _) => { }, out _), Is.True);
    }

    [Test]
    public void Wrong_secret_or_user_is_refused_without_naming_the_secret()
    {
        var (chap, id, c) = Challenge();
        Assert.That(chap.OnResponse("alice", Md5Hex(id, "wrong", c), null, null, (_, _) => { }, out var e), Is.False);
        Assert.That(e, Does.Not.Contain(Initiator.Secret));
        var (chap2, id2, c2) = Challenge();
        Assert.That(chap2.OnResponse("mallory", Md5Hex(id2, Initiator.Secret, c2), null, null, (_, _) => { }, out _), Is.False);
    }

    [Test]
    public void Mutual_chap_answers_the_initiator_challenge()
    {
        var (chap, id, c) = Challenge(TargetCredentials);
        var mine = new byte[] { 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 1, 2, 3, 4, 5, 6 };
        var sent = new Dictionary<string, string>();
        Assert.That(chap.OnResponse("alice", Md5Hex(id, Initiator.Secret, c), "77", ChapValue.EncodeHex(mine), (k, v) => sent[k] = v, out var e), Is.True, e);
        Assert.That(sent["CHAP_N"], Is.EqualTo("ballast"));
        Assert.That(sent["CHAP_R"], Is.EqualTo(Md5Hex(77, TargetCredentials.Secret, mine)));
    }

    [Test]
    public void Mutual_chap_without_target_credentials_is_refused()
    {
        var (chap, id, c) = Challenge();
        Assert.That(chap.OnResponse("alice", Md5Hex(id, Initiator.Secret, c), "1", "0x0102030405", (_, _) => { }, out var e), Is.False);
        Assert.That(e, Does.Contain("MutualChap"));
    }

    [Test]
    public void A_reflected_challenge_is_refused()
    {
        var (chap, id, c) = Challenge(TargetCredentials);
        Assert.That(chap.OnResponse("alice", Md5Hex(id, Initiator.Secret, c), "1", ChapValue.EncodeHex(c), (_, _) => { }, out var e), Is.False);
        Assert.That(e, Does.Contain("reflected"));
    }

    [Test]
    public void Values_over_1024_bytes_are_refused()
    {
        var (chap, _, _) = Challenge(TargetCredentials);
        var huge = ChapValue.EncodeHex(new byte[1025]);
        Assert.Multiple(() =>
        {
            Assert.That(ChapValue.TryDecode(huge, out _), Is.False);
            Assert.That(ChapValue.TryDecode("0b" + Convert.ToBase64String(new byte[1100]), out _), Is.False);
            Assert.That(chap.OnResponse("alice", huge, null, null, (_, _) => { }, out _), Is.False);
        });
    }

    [TestCase("0xZZ")]
    [TestCase("0b%%%%")]
    [TestCase("1234")]
    [TestCase("0x")]
    public void Undecodable_values_are_refused(string value)
    {
        Assert.That(ChapValue.TryDecode(value, out _), Is.False);
        var (chap, _, _) = Challenge(TargetCredentials);
        Assert.That(chap.OnResponse("alice", value, null, null, (_, _) => { }, out var e), Is.False);
        Assert.That(e, Does.Contain("decode"));
    }

    [Test]
    public void Undecodable_mutual_challenge_is_refused()
    {
        var (chap, id, c) = Challenge(TargetCredentials);
        Assert.That(chap.OnResponse("alice", Md5Hex(id, Initiator.Secret, c), "1", "0xnothex", (_, _) => { }, out _), Is.False);
        var (chap2, id2, c2) = Challenge(TargetCredentials);
        Assert.That(chap2.OnResponse("alice", Md5Hex(id2, Initiator.Secret, c2), "300", "0x0102", (_, _) => { }, out _), Is.False, "CHAP_I out of range");
    }

    [Test]
    public void Only_md5_is_offered()
    {
        var chap = new ChapAuthenticator(Initiator, null);
        var sent = new Dictionary<string, string>();
        Assert.That(chap.OnAlgorithm("6,7", (k, v) => sent[k] = v, out _), Is.False);
        Assert.That(sent["CHAP_A"], Is.EqualTo("Reject"));
    }

    [Test]
    public void Odd_length_hex_is_decoded_with_a_leading_zero() =>
        Assert.That(ChapValue.TryDecode("0xabc", out var v) ? v : null, Is.EqualTo(new byte[] { 0x0a, 0xbc }));

    [Test]
    public void Chap_secret_never_prints_its_secret() =>
        Assert.That(new ChapSecret("u", "hunter2").ToString(), Does.Not.Contain("hunter2"));
}
