using System.Net;
using Ballast.Engine.Volumes;
using Ballast.Iscsi.Naming;
using Ballast.Iscsi.Session;
using Microsoft.Extensions.Logging;

namespace Ballast.Iscsi.Transport;

/// <summary>What every connection of a target shares: options, the volume directory, logical units, sessions.</summary>
internal sealed class TargetContext
{
    private readonly List<IscsiSession> _sessions = [];
    private readonly HashSet<IscsiConnection> _connections = [];
    private ushort _nextTsih;

    public TargetContext(IscsiTargetOptions options, IVolumeDirectory volumes, ILoggerFactory loggers, LogicalUnitRegistry units)
    {
        Options = options;
        Volumes = volumes;
        Loggers = loggers;
        Log = loggers.CreateLogger("Ballast.Iscsi");
        Resolver = new TargetResolver(options.IqnPrefix, options.Groups, volumes);
        Units = units;
    }

    public IscsiTargetOptions Options { get; }
    public IVolumeDirectory Volumes { get; }
    public ILoggerFactory Loggers { get; }
    public ILogger Log { get; }
    public TargetResolver Resolver { get; }
    public LogicalUnitRegistry Units { get; }

    /// <summary>Bound portals (real ports).</summary>
    public List<IPEndPoint> Portals { get; } = [];

    public bool Stopping { get; set; }

    /// <summary>The CHAP credentials an initiator must present for a target (null: none); discovery uses the global ones.</summary>
    public ChapSecret? ChapFor(ResolvedTarget? target)
    {
        if (target?.Key is { } key && Options.TargetChap is { Count: > 0 } per)
        {
            var name = TargetResolver.ChapKey(target)!;
            foreach (var (k, v) in per)
            {
                if (string.Equals(k, name, StringComparison.OrdinalIgnoreCase) || string.Equals(k, target.TargetName, StringComparison.OrdinalIgnoreCase)
                    || string.Equals(TargetNames.Suffix(k), TargetNames.Suffix(name), StringComparison.Ordinal))
                {
                    return v;
                }
            }
        }
        return Options.Chap;
    }

    public bool TryAddConnection(IscsiConnection c)
    {
        lock (_connections)
        {
            if (Stopping || _connections.Count >= Options.MaxConnections)
            {
                return false;
            }
            _connections.Add(c);
            return true;
        }
    }

    public void RemoveConnection(IscsiConnection c)
    {
        lock (_connections)
        {
            _connections.Remove(c);
        }
    }

    public List<IscsiConnection> Connections()
    {
        lock (_connections)
        {
            return [.. _connections];
        }
    }

    /// <summary>Registers a new session; an older one of the same initiator port and target is returned for reinstatement (RFC 7143 §6.3.5).</summary>
    public IscsiSession? AddSession(IscsiSession s)
    {
        lock (_sessions)
        {
            IscsiSession? old = null;
            foreach (var x in _sessions)
            {
                if (x.InitiatorPort == s.InitiatorPort && x.TargetName == s.TargetName && x.Discovery == s.Discovery)
                {
                    old = x;
                }
            }
            if (old != null)
            {
                _sessions.Remove(old);
            }
            _sessions.Add(s);
            return old;
        }
    }

    public void RemoveSession(IscsiSession s)
    {
        lock (_sessions)
        {
            _sessions.Remove(s);
        }
    }

    public List<IscsiSession> Sessions()
    {
        lock (_sessions)
        {
            return [.. _sessions];
        }
    }

    public ushort NewTsih()
    {
        lock (_sessions)
        {
            while (true)
            {
                var t = ++_nextTsih;
                if (t != 0 && !_sessions.Exists(s => s.Tsih == t))
                {
                    return t;
                }
            }
        }
    }
}
