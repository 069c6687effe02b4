namespace Ballast.Nbd.Protocol;

/// <summary>Magic numbers of the NBD protocol (doc/proto.md), all sent big-endian.</summary>
internal static class NbdMagic
{
    /// <summary>"NBDMAGIC", the first thing the server sends (INIT_PASSWD).</summary>
    public const ulong InitPasswd = 0x4e42444d41474943;

    /// <summary>"IHAVEOPT": newstyle negotiation, and the prefix of every client option.</summary>
    public const ulong IHaveOpt = 0x49484156454F5054;

    /// <summary>Prefix of every fixed-newstyle option reply.</summary>
    public const ulong OptionReply = 0x3e889045565a9;

    public const uint Request = 0x25609513;
    public const uint SimpleReply = 0x67446698;
    public const uint StructuredReply = 0x668e33ef;
}
