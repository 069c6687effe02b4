namespace Ballast.TestSupport;

/// <summary>Paths in the source tree, found from the test assembly's location.</summary>
public static class RepoPaths
{
    public static string Root
    {
        get
        {
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
            {
                if (File.Exists(Path.Combine(dir.FullName, "Ballast.slnx")))
                {
                    return dir.FullName;
                }
            }
            throw new InvalidOperationException($"no Ballast.slnx above {AppContext.BaseDirectory}");
        }
    }

    public static string Vm(string relative) => Path.Combine(Root, "tests", "vm", relative);
}
