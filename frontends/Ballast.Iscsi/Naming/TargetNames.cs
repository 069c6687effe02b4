using Ballast.Engine.Volumes;

namespace Ballast.Iscsi.Naming;

/// <summary>
/// Maps Ballast volume names to iSCSI target names.
/// <para>
/// A volume <c>V</c> is the target <c>&lt;prefix&gt;:&lt;suffix(V)&gt;</c> with LUN 0. Volume names use
/// <c>A-Z a-z 0-9 . _ -</c> and snapshots are <c>volume@snap</c>; iSCSI names are lowercase and allow
/// only <c>a-z 0-9 . - :</c> (RFC 3722 stringprep, RFC 7143 §4.2.7.2), so the suffix is the name
/// lowercased with <c>_</c> replaced by <c>-</c> and <c>@</c> by <c>.</c>:
/// <c>Db_Data@nightly</c> becomes <c>iqn.2026-11.io.ballast:db-data.nightly</c>.
/// </para>
/// <para>
/// The mapping is not one-to-one (<c>a_b</c> and <c>a-b</c>, <c>a.b</c> and <c>a@b</c> collide). Target
/// names are matched case-insensitively; when two exportable names (volumes, snapshots, groups)
/// map to the requested target, the login is refused as "target not found" and the reason is logged.
/// </para>
/// </summary>
public static class TargetNames
{
    public static bool IsValidVolumeName(string? name)
    {
        if (string.IsNullOrEmpty(name) || name.Length > 200)
        {
            return false;
        }
        var ats = 0;
        foreach (var c in name)
        {
            if (c == '@')
            {
                ats++;
                continue;
            }
            if (!(char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-'))
            {
                return false;
            }
        }
        return ats == 0 || (ats == 1 && name[0] != '@' && name[^1] != '@');
    }

    /// <summary>The target-name suffix of a volume or group name.</summary>
    public static string Suffix(string volumeName) =>
        volumeName.ToLowerInvariant().Replace('_', '-').Replace('@', '.');

    public static string TargetName(string prefix, string volumeName) => prefix + ":" + Suffix(volumeName);

    /// <summary>iqn.yyyy-mm.reversed-domain[...], eui.16-hex or naa.hex, lowercase, no ':' at the end.</summary>
    public static bool IsValidPrefix(string? prefix)
    {
        if (string.IsNullOrEmpty(prefix) || prefix.Length > 200 || prefix[^1] == ':')
        {
            return false;
        }
        foreach (var c in prefix)
        {
            if (!(char.IsAsciiLetterLower(c) || char.IsAsciiDigit(c) || c is '.' or '-' or ':'))
            {
                return false;
            }
        }
        if (prefix.StartsWith("iqn.", StringComparison.Ordinal))
        {
            // iqn.yyyy-mm.<something>
            return prefix.Length > 12 && char.IsAsciiDigit(prefix[4]) && char.IsAsciiDigit(prefix[7]) && prefix[8] == '-'
                && char.IsAsciiDigit(prefix[9]) && char.IsAsciiDigit(prefix[10]) && prefix[11] == '.';
        }
        return prefix.StartsWith("eui.", StringComparison.Ordinal) || prefix.StartsWith("naa.", StringComparison.Ordinal);
    }
}

/// <summary>What a target name resolved to.</summary>
internal enum ResolveOutcome
{
    Found,
    NotFound,
    /// <summary>Two or more exportable names map to the target name.</summary>
    Ambiguous,
}

/// <summary>A resolved target: its canonical name and the volume name behind each LUN (null where a group volume is missing).</summary>
internal sealed record ResolvedTarget(ResolveOutcome Outcome, string TargetName, string? Key, IReadOnlyList<string?> LunVolumes, string? Conflict)
{
    public static ResolvedTarget NotFound(string name) => new(ResolveOutcome.NotFound, name, null, [], null);
}

/// <summary>Looks target names up against the volume directory and the configured groups (at login and discovery time).</summary>
internal sealed class TargetResolver(string prefix, IReadOnlyList<IscsiGroupTarget> groups, IVolumeDirectory volumes)
{
    public string Prefix => prefix;

    /// <summary>Every target name: volumes, snapshots and groups, with collisions left out (they cannot log in).</summary>
    public List<string> ListTargets()
    {
        var counts = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var v in volumes.List())
        {
            if (TargetNames.IsValidVolumeName(v.Name))
            {
                var t = TargetNames.TargetName(prefix, v.Name);
                counts[t] = counts.GetValueOrDefault(t) + 1;
            }
        }
        foreach (var g in groups)
        {
            var t = TargetNames.TargetName(prefix, g.Name);
            counts[t] = counts.GetValueOrDefault(t) + 1;
        }
        var list = new List<string>();
        foreach (var (name, n) in counts)
        {
            if (n == 1)
            {
                list.Add(name);
            }
        }
        list.Sort(StringComparer.Ordinal);
        return list;
    }

    public ResolvedTarget Resolve(string requested)
    {
        var wanted = requested.ToLowerInvariant();
        var colon = prefix.Length;
        if (wanted.Length <= colon + 1 || !wanted.StartsWith(prefix, StringComparison.Ordinal) || wanted[colon] != ':')
        {
            return ResolvedTarget.NotFound(requested);
        }
        var suffix = wanted[(colon + 1)..];
        string? found = null;
        ResolvedTarget? result = null;
        foreach (var v in volumes.List())
        {
            if (TargetNames.IsValidVolumeName(v.Name) && TargetNames.Suffix(v.Name) == suffix)
            {
                if (found != null)
                {
                    return new ResolvedTarget(ResolveOutcome.Ambiguous, wanted, null, [], $"volumes \"{found}\" and \"{v.Name}\" both map to {wanted}");
                }
                found = v.Name;
                result = new ResolvedTarget(ResolveOutcome.Found, wanted, "v:" + v.Name, [v.Name], null);
            }
        }
        foreach (var g in groups)
        {
            if (TargetNames.Suffix(g.Name) == suffix)
            {
                if (found != null)
                {
                    return new ResolvedTarget(ResolveOutcome.Ambiguous, wanted, null, [], $"group \"{g.Name}\" and volume \"{found}\" both map to {wanted}");
                }
                found = g.Name;
                var luns = new string?[g.Volumes.Count];
                for (var i = 0; i < luns.Length; i++)
                {
                    luns[i] = volumes.Find(g.Volumes[i]) != null ? g.Volumes[i] : null;
                }
                result = new ResolvedTarget(ResolveOutcome.Found, wanted, "g:" + g.Name, luns, null);
            }
        }
        return result ?? ResolvedTarget.NotFound(requested);
    }

    /// <summary>The name used for per-target CHAP lookups: the volume or group name.</summary>
    public static string? ChapKey(ResolvedTarget t) => t.Key?[2..];
}
