namespace Ballast.Iscsi.Scsi;

/// <summary>
/// The changeable mode parameters of a logical unit (shared by every I_T nexus, SPC-4 §7.5).
/// Only what MODE SELECT may change lives here; the pages themselves are built in ModeCommands.
/// </summary>
internal sealed class ModeParameters
{
    /// <summary>Caching page WCE: the volume acknowledges writes before they are durable (flush makes them so).</summary>
    public volatile bool WriteCacheEnabled = true;

    /// <summary>Control page D_SENSE: descriptor-format sense data.</summary>
    public volatile bool DescriptorSense;

    /// <summary>Control page SWP: software write protect; writes fail with DATA PROTECT / WRITE PROTECTED.</summary>
    public volatile bool SoftwareWriteProtect;
}
