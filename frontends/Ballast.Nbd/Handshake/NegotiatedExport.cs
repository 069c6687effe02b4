using Ballast.Engine.Volumes;
using Ballast.Nbd.Protocol;

namespace Ballast.Nbd.Handshake;

/// <summary>What option haggling settled: the export and how the transmission phase talks.</summary>
internal sealed record NegotiatedExport(
    string Name,
    IBlockVolume Volume,
    Stream Stream,
    TransmissionFlags Flags,
    bool Structured,
    /// <summary>Context id of base:allocation if it was selected for this export, else 0.</summary>
    uint AllocationContext,
    bool Tls);
