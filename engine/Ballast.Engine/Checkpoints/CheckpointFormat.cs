namespace Ballast.Engine.Checkpoints;

/// <summary>Constants of the checkpoint blob. The blob's CRC and length live in the superblock.</summary>
internal static class CheckpointFormat
{
    public const ulong Magic = 0x31_30_54_50_4B_43_4C_42; // "BLCKPT01"
    public const ulong EndMagic = 0x31_44_4E_45_4B_43_4C_42; // "BLCKEND1"
    public const uint Version = 1;
    public const byte LeafNode = 1;
    public const byte InnerNode = 2;
    public const int EntryBytes = 20;
    public const int BitmapBytes = Maps.ExtentMap.Fanout / 8;
}
