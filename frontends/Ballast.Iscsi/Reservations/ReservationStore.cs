using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;

namespace Ballast.Iscsi.Reservations;

/// <summary>A registration: an I_T nexus (initiator port, target port) and its reservation key.</summary>
internal sealed record Registration(string InitiatorPort, string TargetPort, ulong Key);

/// <summary>What is persisted for one logical unit.</summary>
internal sealed record ReservationSnapshot(uint Generation, bool Aptpl, IReadOnlyList<Registration> Registrations,
    ReservationType? Type, string? HolderInitiatorPort, string? HolderTargetPort);

/// <summary>
/// Keeps persistent reservations in <c>&lt;StateDirectory&gt;/pr-&lt;volume uid&gt;.txt</c>, one small
/// text file per logical unit, replaced atomically: write a temp file, fsync it, rename over the
/// old one, fsync the directory. A torn or foreign file is ignored (and logged by the caller).
/// </summary>
internal sealed partial class ReservationStore
{
    private const string Magic = "ballast-pr 1";
    private readonly string _directory;

    public ReservationStore(string directory)
    {
        _directory = directory;
        Directory.CreateDirectory(directory);
    }

    private string PathFor(Guid uid) => Path.Combine(_directory, $"pr-{uid:N}.txt");

    public void Save(Guid uid, ReservationSnapshot s)
    {
        var sb = new StringBuilder();
        sb.Append(Magic).Append('\n');
        sb.Append(CultureInfo.InvariantCulture, $"generation {s.Generation}\n");
        sb.Append(CultureInfo.InvariantCulture, $"aptpl {(s.Aptpl ? 1 : 0)}\n");
        foreach (var r in s.Registrations)
        {
            sb.Append(CultureInfo.InvariantCulture, $"reg {r.Key:x16} {r.InitiatorPort} {r.TargetPort}\n");
        }
        if (s.Type is { } t)
        {
            sb.Append(CultureInfo.InvariantCulture, $"res {(int)t} {s.HolderInitiatorPort ?? "*"} {s.HolderTargetPort ?? "*"}\n");
        }
        sb.Append("end\n");
        var path = PathFor(uid);
        var temp = path + ".tmp";
        using (var f = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None))
        {
            var bytes = Encoding.UTF8.GetBytes(sb.ToString());
            f.Write(bytes);
            f.Flush(flushToDisk: true);
        }
        File.Move(temp, path, overwrite: true);
        SyncDirectory(_directory);
    }

    public void Delete(Guid uid)
    {
        var path = PathFor(uid);
        if (File.Exists(path))
        {
            File.Delete(path);
            SyncDirectory(_directory);
        }
    }

    /// <summary>The saved state, or null when there is none or it is not valid.</summary>
    public ReservationSnapshot? Load(Guid uid, out string? problem)
    {
        problem = null;
        var path = PathFor(uid);
        if (!File.Exists(path))
        {
            return null;
        }
        var lines = File.ReadAllLines(path);
        if (lines.Length < 4 || lines[0] != Magic || lines[^1] != "end")
        {
            problem = $"{path} is not a complete reservation file; ignoring it";
            return null;
        }
        uint generation = 0;
        var aptpl = false;
        var regs = new List<Registration>();
        ReservationType? type = null;
        string? hi = null, ht = null;
        for (var i = 1; i < lines.Length - 1; i++)
        {
            var parts = lines[i].Split(' ');
            switch (parts[0])
            {
                case "generation" when parts.Length == 2 && uint.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out var g):
                    generation = g;
                    break;
                case "aptpl" when parts.Length == 2:
                    aptpl = parts[1] == "1";
                    break;
                case "reg" when parts.Length == 4 && ulong.TryParse(parts[1], NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out var key):
                    regs.Add(new Registration(parts[2], parts[3], key));
                    break;
                case "res" when parts.Length == 4 && byte.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out var t) && ReservationTypes.IsValid(t):
                    type = (ReservationType)t;
                    hi = parts[2] == "*" ? null : parts[2];
                    ht = parts[3] == "*" ? null : parts[3];
                    break;
                default:
                    problem = $"{path} line {i + 1} is not valid; ignoring the file";
                    return null;
            }
        }
        return new ReservationSnapshot(generation, aptpl, regs, type, hi, ht);
    }

    private static void SyncDirectory(string dir)
    {
        if (!OperatingSystem.IsLinux())
        {
            return;
        }
        var fd = Open(dir, 0 /* O_RDONLY */);
        if (fd >= 0)
        {
            _ = Fsync(fd);
            _ = Close(fd);
        }
    }

    [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "fsync")]
    private static partial int Fsync(int fd);

    [LibraryImport("libc", EntryPoint = "close")]
    private static partial int Close(int fd);
}
