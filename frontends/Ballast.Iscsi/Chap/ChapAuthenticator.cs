using System.Security.Cryptography;
using System.Text;

namespace Ballast.Iscsi.Chap;

/// <summary>
/// CHAP with MD5 (RFC 7143 §12.1.3, RFC 1994) for the target side of the security stage:
/// <list type="number">
/// <item>initiator offers <c>CHAP_A</c>; we pick 5 (MD5) and send <c>CHAP_I</c> and a random <c>CHAP_C</c>;</item>
/// <item>initiator sends <c>CHAP_N</c> and <c>CHAP_R</c> = MD5(I || secret || C), and for mutual CHAP its own <c>CHAP_I</c>/<c>CHAP_C</c>;</item>
/// <item>we check the response and, for mutual CHAP, answer with our <c>CHAP_N</c> and <c>CHAP_R</c>.</item>
/// </list>
/// A challenge the initiator reflects back (its CHAP_C equal to ours) is refused, as are values
/// longer than 1024 bytes and values that do not decode. Secrets never appear in errors.
/// </summary>
internal sealed class ChapAuthenticator
{
    private const int ChallengeLength = 16;
    private const string Md5Algorithm = "5";
    private readonly ChapSecret _expected;
    private readonly ChapSecret? _mutual;
    private byte _id;
    private byte[]? _challenge;

    public ChapAuthenticator(ChapSecret expected, ChapSecret? mutual)
    {
        _expected = expected;
        _mutual = mutual;
    }

    public enum Step
    {
        /// <summary>Waiting for CHAP_A.</summary>
        Algorithm,
        /// <summary>Challenge sent; waiting for CHAP_N / CHAP_R.</summary>
        Response,
        Done,
    }

    public Step State { get; private set; } = Step.Algorithm;

    /// <summary>The authenticated user name (after success).</summary>
    public string? User { get; private set; }

    /// <summary>Answers CHAP_A: false if MD5 is not among the algorithms offered.</summary>
    public bool OnAlgorithm(string offer, Action<string, string> respond, out string? error)
    {
        error = null;
        foreach (var a in offer.Split(','))
        {
            if (a == Md5Algorithm)
            {
                _id = (byte)RandomNumberGenerator.GetInt32(256);
                _challenge = RandomNumberGenerator.GetBytes(ChallengeLength);
                respond("CHAP_A", Md5Algorithm);
                respond("CHAP_I", ChapValue.FormatId(_id));
                respond("CHAP_C", ChapValue.EncodeHex(_challenge));
                State = Step.Response;
                return true;
            }
        }
        respond("CHAP_A", Negotiation.TextKeys.Reject);
        error = $"no supported CHAP algorithm in CHAP_A={offer} (only 5, MD5)";
        return false;
    }

    /// <summary>
    /// Checks CHAP_N/CHAP_R and answers a mutual challenge. Values are raw text from the PDU;
    /// <paramref name="initiatorId"/> and <paramref name="initiatorChallenge"/> are null for one-way CHAP.
    /// </summary>
    public bool OnResponse(string? name, string? response, string? initiatorId, string? initiatorChallenge,
        Action<string, string> respond, out string? error)
    {
        error = null;
        if (State != Step.Response || _challenge is null)
        {
            error = "CHAP_R before CHAP_A";
            return false;
        }
        if (name is null || response is null)
        {
            error = "CHAP_N or CHAP_R missing";
            return false;
        }
        if (!ChapValue.TryDecode(response, out var r))
        {
            error = "CHAP_R does not decode (0x hex or 0b base64, at most 1024 bytes)";
            return false;
        }
        // Decode the mutual challenge before judging the response, so a malformed one is always refused.
        byte[]? mutualChallenge = null;
        byte mutualId = 0;
        if (initiatorId != null || initiatorChallenge != null)
        {
            if (initiatorId is null || initiatorChallenge is null)
            {
                error = "mutual CHAP needs both CHAP_I and CHAP_C";
                return false;
            }
            if (!ChapValue.TryParseId(initiatorId, out mutualId))
            {
                error = "CHAP_I is not a number 0..255";
                return false;
            }
            if (!ChapValue.TryDecode(initiatorChallenge, out mutualChallenge) || mutualChallenge.Length == 0)
            {
                error = "CHAP_C does not decode (0x hex or 0b base64, at most 1024 bytes)";
                return false;
            }
            if (mutualChallenge.AsSpan().SequenceEqual(_challenge))
            {
                // RFC 7143 §12.1.3: a reflected challenge lets an attacker turn us into an oracle.
                error = "the initiator reflected the target's CHAP challenge";
                return false;
            }
        }
        var expected = Response(_id, _expected.Secret, _challenge);
        if (!string.Equals(name, _expected.User, StringComparison.Ordinal) || !CryptographicOperations.FixedTimeEquals(r, expected))
        {
            error = $"CHAP authentication failed for user \"{name}\"";
            return false;
        }
        User = name;
        if (mutualChallenge != null)
        {
            if (_mutual is null)
            {
                error = "the initiator asked for mutual CHAP but the target has no credentials (MutualChap) configured";
                return false;
            }
            respond("CHAP_N", _mutual.User);
            respond("CHAP_R", ChapValue.EncodeHex(Response(mutualId, _mutual.Secret, mutualChallenge)));
        }
        State = Step.Done;
        return true;
    }

    /// <summary>RFC 1994 §4.1: MD5 over the identifier, the secret and the challenge.</summary>
    internal static byte[] Response(byte id, string secret, ReadOnlySpan<byte> challenge)
    {
        var s = Encoding.UTF8.GetBytes(secret);
        var input = new byte[1 + s.Length + challenge.Length];
        input[0] = id;
        s.CopyTo(input, 1);
        challenge.CopyTo(input.AsSpan(1 + s.Length));
#pragma warning disable CA5351 // MD5 is what CHAP_A=5 means (RFC 7143 §12.1.3); it is not our choice.
        return MD5.HashData(input);
#pragma warning restore CA5351
    }
}
