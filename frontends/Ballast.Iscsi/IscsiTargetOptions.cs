using System.Net;

namespace Ballast.Iscsi;

/// <summary>
/// Settings of the iSCSI target. Every limit has a safe default; <see cref="IscsiTarget.StartAsync"/>
/// validates them and throws an <see cref="ArgumentException"/> naming the bad option.
/// </summary>
public sealed class IscsiTargetOptions
{
    public const string DefaultIqnPrefix = "iqn.2026-11.io.ballast";

    /// <summary>Portals to listen on. Default 127.0.0.1:3260.</summary>
    public IReadOnlyList<EndPoint> Listen { get; init; } = [new IPEndPoint(IPAddress.Loopback, 3260)];

    /// <summary>Target names are <c>&lt;prefix&gt;:&lt;volume&gt;</c>; see <see cref="Naming.TargetNames"/>.</summary>
    public string IqnPrefix { get; init; } = DefaultIqnPrefix;

    /// <summary>Group targets: one target name carrying several volumes as LUN 0..N (in the given order).</summary>
    public IReadOnlyList<IscsiGroupTarget> Groups { get; init; } = [];

    /// <summary>Global one-way CHAP: initiators must authenticate with these credentials (also for discovery).</summary>
    public ChapSecret? Chap { get; init; }

    /// <summary>The target's own credentials, sent when an initiator asks for mutual CHAP.</summary>
    public ChapSecret? MutualChap { get; init; }

    /// <summary>Per-target CHAP overrides, keyed by target name suffix (volume or group name) or full IQN; case-insensitive.</summary>
    public IReadOnlyDictionary<string, ChapSecret> TargetChap { get; init; } = new Dictionary<string, ChapSecret>();

    /// <summary>Directory for persistent reservations (created when missing). Null keeps them in memory only.</summary>
    public string? StateDirectory { get; init; }

    /// <summary>Most connections open at once (logged in or not); further ones are closed at accept.</summary>
    public int MaxConnections { get; init; } = 256;

    /// <summary>A connection that has not reached full feature phase after this long is closed.</summary>
    public TimeSpan LoginTimeout { get; init; } = TimeSpan.FromSeconds(15);

    /// <summary>After this long without traffic from the initiator the target sends a NOP-In ping. Zero disables pings.</summary>
    public TimeSpan NopInInterval { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>A ping not answered within this long closes the connection (dead initiator).</summary>
    public TimeSpan NopInTimeout { get; init; } = TimeSpan.FromSeconds(15);

    /// <summary>MaxRecvDataSegmentLength the target declares (largest PDU data segment it accepts).</summary>
    public int MaxRecvDataSegmentLength { get; init; } = 256 * 1024;

    /// <summary>MaxBurstLength the target offers (largest solicited Data-Out / Data-In sequence).</summary>
    public int MaxBurstLength { get; init; } = 1024 * 1024;

    /// <summary>FirstBurstLength the target offers (largest unsolicited data).</summary>
    public int FirstBurstLength { get; init; } = 256 * 1024;

    /// <summary>Command window per session: MaxCmdSN - ExpCmdSN + 1 when nothing is in flight.</summary>
    public int CommandWindow { get; init; } = 128;

    /// <summary>Largest SCSI transfer in bytes (advertised as MAXIMUM TRANSFER LENGTH); larger commands get INVALID FIELD IN CDB.</summary>
    public int MaxTransferLength { get; init; } = 8 * 1024 * 1024;

    /// <summary>Offer CRC32C digests; initiators that ask for them get them. (None is always accepted.)</summary>
    public bool AllowDigests { get; init; } = true;

    internal void Validate()
    {
        if (Listen is null || Listen.Count == 0)
        {
            throw new ArgumentException("Listen: at least one endpoint is required", nameof(Listen));
        }
        foreach (var ep in Listen)
        {
            if (ep is not IPEndPoint)
            {
                throw new ArgumentException($"Listen: {ep} is not an IP endpoint", nameof(Listen));
            }
        }
        if (!Naming.TargetNames.IsValidPrefix(IqnPrefix))
        {
            throw new ArgumentException($"IqnPrefix: \"{IqnPrefix}\" is not a valid iqn./eui./naa. name prefix", nameof(IqnPrefix));
        }
        var groups = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        foreach (var g in Groups ?? [])
        {
            if (g is null || !Naming.TargetNames.IsValidVolumeName(g.Name))
            {
                throw new ArgumentException($"Groups: \"{g?.Name}\" is not a valid group name (A-Z a-z 0-9 . _ -)", nameof(Groups));
            }
            if (!groups.Add(Naming.TargetNames.Suffix(g.Name)))
            {
                throw new ArgumentException($"Groups: two groups map to the target name suffix \"{Naming.TargetNames.Suffix(g.Name)}\"", nameof(Groups));
            }
            if (g.Volumes is null || g.Volumes.Count == 0 || g.Volumes.Count > 255)
            {
                throw new ArgumentException($"Groups: group \"{g.Name}\" needs 1..255 volumes", nameof(Groups));
            }
        }
        ValidateChap(Chap, nameof(Chap));
        ValidateChap(MutualChap, nameof(MutualChap));
        foreach (var (name, secret) in TargetChap ?? new Dictionary<string, ChapSecret>())
        {
            ValidateChap(secret, $"{nameof(TargetChap)}[{name}]");
        }
        Positive(MaxConnections, nameof(MaxConnections), 1, 1_000_000);
        if (LoginTimeout <= TimeSpan.Zero)
        {
            throw new ArgumentException("LoginTimeout must be positive", nameof(LoginTimeout));
        }
        if (NopInInterval < TimeSpan.Zero || NopInTimeout <= TimeSpan.Zero)
        {
            throw new ArgumentException("NopInInterval must be >= 0 and NopInTimeout > 0", nameof(NopInInterval));
        }
        // RFC 7143 §13.12, §13.13, §13.14: 512 .. 2^24-1.
        Positive(MaxRecvDataSegmentLength, nameof(MaxRecvDataSegmentLength), 512, (1 << 24) - 1);
        Positive(MaxBurstLength, nameof(MaxBurstLength), 512, (1 << 24) - 1);
        Positive(FirstBurstLength, nameof(FirstBurstLength), 512, MaxBurstLength);
        Positive(CommandWindow, nameof(CommandWindow), 1, 4096);
        Positive(MaxTransferLength, nameof(MaxTransferLength), 4096, 256 * 1024 * 1024);
    }

    private static void Positive(int value, string name, int min, int max)
    {
        if (value < min || value > max)
        {
            throw new ArgumentException($"{name} must be between {min} and {max} (was {value})", name);
        }
    }

    private static void ValidateChap(ChapSecret? s, string name)
    {
        if (s is null)
        {
            return;
        }
        if (string.IsNullOrEmpty(s.User) || s.User.Length > 255)
        {
            throw new ArgumentException($"{name}: the CHAP user name must be 1..255 characters", name);
        }
        // RFC 7143 §12.1.3 asks for at least 12 bytes; open-iscsi and tgt accept shorter. Require 1..255.
        if (string.IsNullOrEmpty(s.Secret) || System.Text.Encoding.UTF8.GetByteCount(s.Secret) > 255)
        {
            throw new ArgumentException($"{name}: the CHAP secret must be 1..255 bytes", name);
        }
    }
}

/// <summary>A target carrying several volumes: LUN i is <c>Volumes[i]</c>.</summary>
public sealed class IscsiGroupTarget
{
    public required string Name { get; init; }
    public required IReadOnlyList<string> Volumes { get; init; }
}

/// <summary>CHAP credentials. <see cref="ToString"/> never shows the secret.</summary>
public sealed record ChapSecret(string User, string Secret)
{
    public override string ToString() => $"ChapSecret {{ User = {User}, Secret = *** }}";
}

/// <summary>One logged-in session, as the daemon lists it.</summary>
public sealed record IscsiSessionInfo(
    string InitiatorName,
    string TargetName,
    EndPoint? Peer,
    IReadOnlyList<string> Volumes,
    DateTimeOffset Since,
    bool HeaderDigest,
    bool DataDigest,
    bool Discovery)
{
    /// <summary>The session's LUNs with what each has done (empty for discovery sessions).</summary>
    public IReadOnlyList<IscsiLunInfo> Luns { get; init; } = [];
}

/// <summary>One LUN of a session: its volume and the commands and bytes it carried.</summary>
public sealed record IscsiLunInfo(int Lun, string Volume, long Commands, long BytesRead, long BytesWritten);
