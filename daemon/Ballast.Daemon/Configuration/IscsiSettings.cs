using Ballast.Iscsi;
using Ballast.Iscsi.Naming;

namespace Ballast.Daemon.Configuration;

/// <summary>
/// One set of CHAP credentials as configured: a user, and a secret given either inline (config
/// file only, never a flag: flags show in ps) or as a file holding it. Resolved once at load.
/// </summary>
public sealed class IscsiChapSetting(string keyPrefix)
{
    public string UserKey => keyPrefix + "-user";
    public string SecretKey => keyPrefix + "-secret";
    public string SecretFileKey => keyPrefix + "-secret-file";

    public string? User { get; set; }
    public string? InlineSecret { get; set; }
    public string? SecretFile { get; set; }

    /// <summary>The credentials after <see cref="IscsiSettings.Resolve"/>; null when CHAP is not configured.</summary>
    public ChapSecret? Credentials { get; internal set; }

    public override string ToString() => Credentials is null ? "off" : $"user {Credentials.User}";
}

/// <summary>Parsing and checking of the iSCSI settings; every message names its key.</summary>
public static class IscsiSettings
{
    public const int DefaultPort = 3260;

    // RFC 7143 §12.1.3: CHAP secrets of at most 255 bytes (Ballast.Iscsi enforces the same).
    private const int MaxSecretBytes = 255;

    public static List<System.Net.EndPoint> ParseListen(IReadOnlyList<string> values, Func<string, System.Net.EndPoint> endpoint)
    {
        if (values.Any(v => v.Trim().Equals("off", StringComparison.OrdinalIgnoreCase)))
        {
            return values.Count == 1 ? [] : throw new SettingsException("iscsi-listen", "\"off\" turns iSCSI off and cannot be combined with addresses");
        }
        var list = values.Select(endpoint).ToList();
        if (list.Any(e => e is System.Net.Sockets.UnixDomainSocketEndPoint))
        {
            throw new SettingsException("iscsi-listen", "iSCSI listens on TCP addresses (ADDR:PORT, default port 3260), not unix sockets");
        }
        return list;
    }

    public static string ParsePrefix(string v) => TargetNames.IsValidPrefix(v)
        ? v
        : throw new SettingsException("iscsi-iqn-prefix", $"\"{v}\" is not an iSCSI name prefix: lowercase iqn.YYYY-MM.reversed.domain[:more] (like iqn.2026-11.io.ballast), eui.<hex> or naa.<hex>, from a-z 0-9 . - :");

    /// <summary>NAME=VOLUME[,VOLUME...]: one target carrying the volumes as LUN 0, 1, ...</summary>
    public static IscsiGroupTarget ParseGroup(string v)
    {
        var eq = v.IndexOf('=', StringComparison.Ordinal);
        if (eq <= 0 || eq == v.Length - 1)
        {
            throw new SettingsException("iscsi-group", $"\"{v}\" should be NAME=VOLUME[,VOLUME...], like db=db-data,db-log");
        }
        return Group(v[..eq], v[(eq + 1)..].Split(','));
    }

    public static IscsiGroupTarget Group(string name, IReadOnlyList<string> volumes)
    {
        if (!TargetNames.IsValidVolumeName(name) || name.Contains('@', StringComparison.Ordinal))
        {
            throw new SettingsException("iscsi-group", $"group name \"{name}\" must be 1-200 characters from A-Z a-z 0-9 . _ -");
        }
        if (volumes.Count is 0 or > 255)
        {
            throw new SettingsException("iscsi-group", $"group {name} needs 1 to 255 volumes (it has {volumes.Count})");
        }
        foreach (var vol in volumes)
        {
            if (vol.Length == 0 || !TargetNames.IsValidVolumeName(vol))
            {
                throw new SettingsException("iscsi-group", $"group {name}: \"{vol}\" is not a volume name");
            }
        }
        if (volumes.GroupBy(x => x, StringComparer.Ordinal).FirstOrDefault(g => g.Count() > 1) is { } dup)
        {
            throw new SettingsException("iscsi-group", $"group {name} lists volume {dup.Key} twice");
        }
        return new IscsiGroupTarget { Name = name, Volumes = [.. volumes] };
    }

    /// <summary>Checks the iSCSI settings together and reads secret files; call after every value is applied.</summary>
    public static void Resolve(DaemonSettings s)
    {
        if (s.IscsiGroups.GroupBy(g => TargetNames.Suffix(g.Name), StringComparer.Ordinal).FirstOrDefault(g => g.Count() > 1) is { } dup)
        {
            throw new SettingsException("iscsi-group", $"groups {string.Join(" and ", dup.Select(g => g.Name))} map to the same target name {TargetNames.TargetName(s.IscsiIqnPrefix, dup.Key)}");
        }
        Resolve(s.IscsiChap, s.ConfigFile);
        Resolve(s.IscsiMutualChap, s.ConfigFile);
        if (s.IscsiMutualChap.Credentials != null && s.IscsiChap.Credentials == null)
        {
            throw new SettingsException(s.IscsiMutualChap.UserKey, "mutual CHAP (the target proving itself) needs initiator CHAP too: set iscsi-chap-user and its secret");
        }
        if (s.IscsiMutualChap.Credentials is { } m && s.IscsiChap.Credentials is { } c && m.Secret == c.Secret)
        {
            // RFC 7143 §12.1.3: the two directions must not share a secret (reflection attacks).
            throw new SettingsException(s.IscsiMutualChap.SecretKey, "must differ from the initiator's CHAP secret");
        }
    }

    private static void Resolve(IscsiChapSetting c, string? configFile)
    {
        if (c.InlineSecret != null && c.SecretFile != null)
        {
            throw new SettingsException(c.SecretKey, $"give the secret either inline or as {c.SecretFileKey}, not both");
        }
        var secret = c.InlineSecret;
        if (c.SecretFile != null)
        {
            secret = ReadSecretFile(c.SecretFileKey, c.SecretFile);
        }
        else if (secret != null && configFile != null && ReadableByOthers(configFile))
        {
            throw new SettingsException(c.SecretKey, $"{configFile} holds a CHAP secret and is readable by others; chmod 600 {configFile}, or put the secret in a file named by {c.SecretFileKey}");
        }
        if (c.User == null && secret == null)
        {
            c.Credentials = null;
            return;
        }
        if (c.User == null)
        {
            throw new SettingsException(c.UserKey, $"a CHAP secret is set but no user name; set {c.UserKey}");
        }
        if (c.User.Length is 0 or > 255 || c.User.Any(char.IsControl))
        {
            throw new SettingsException(c.UserKey, "must be 1 to 255 printable characters");
        }
        if (secret == null)
        {
            throw new SettingsException(c.SecretKey, $"{c.UserKey} is set but no secret; set {c.SecretKey} in the config file or {c.SecretFileKey}");
        }
        var bytes = System.Text.Encoding.UTF8.GetByteCount(secret);
        if (bytes is 0 or > MaxSecretBytes)
        {
            // The length is safe to say; the secret itself never appears in a message.
            throw new SettingsException(c.SecretKey, $"must be 1 to {MaxSecretBytes} bytes (it is {bytes})");
        }
        c.Credentials = new ChapSecret(c.User, secret);
    }

    private static string ReadSecretFile(string key, string path)
    {
        if (!File.Exists(path))
        {
            throw new SettingsException(key, $"{path} does not exist");
        }
        if (ReadableByOthers(path))
        {
            throw new SettingsException(key, $"{path} is readable by others; chmod 600 {path}");
        }
        try
        {
            // One line; the newline an editor or echo leaves is not part of the secret.
            return File.ReadAllText(path).TrimEnd('\r', '\n');
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new SettingsException(key, $"cannot read {path}: {e.Message}");
        }
    }

    private static bool ReadableByOthers(string path) =>
        (File.GetUnixFileMode(path) & (UnixFileMode.GroupRead | UnixFileMode.OtherRead)) != 0;
}
