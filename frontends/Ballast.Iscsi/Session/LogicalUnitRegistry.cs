using Ballast.Engine.Volumes;
using Ballast.Iscsi.Reservations;
using Ballast.Iscsi.Scsi;
using Microsoft.Extensions.Logging;

namespace Ballast.Iscsi.Session;

/// <summary>One <see cref="LogicalUnit"/> per volume (by UID), shared by every session and target that reaches it; reservations are loaded on first use.</summary>
internal sealed class LogicalUnitRegistry(ReservationStore? store, int maxTransferLength, ILogger log)
{
    private readonly Dictionary<Guid, LogicalUnit> _units = [];

    public LogicalUnit Get(IBlockVolume volume)
    {
        lock (_units)
        {
            if (_units.TryGetValue(volume.Uid, out var lu))
            {
                lu.Volume = volume; // the directory may hand out a fresh object for the same volume
                return lu;
            }
            lu = new LogicalUnit(volume, store) { MaxTransferLength = maxTransferLength };
            if (store != null)
            {
                try
                {
                    var saved = store.Load(volume.Uid, out var problem);
                    if (problem != null)
                    {
                        log.LogWarning("Persistent reservations of volume {Volume}: {Problem}", volume.Name, problem);
                    }
                    if (saved != null)
                    {
                        lu.Reservations.Load(saved);
                    }
                }
                catch (IOException e)
                {
                    log.LogWarning(e, "Could not read persistent reservations of volume {Volume}", volume.Name);
                }
            }
            _units[volume.Uid] = lu;
            return lu;
        }
    }

    public List<LogicalUnit> All()
    {
        lock (_units)
        {
            return [.. _units.Values];
        }
    }
}
