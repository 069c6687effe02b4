namespace Ballast.Daemon.Configuration;

/// <summary>
/// What is wrong with a path, in an operator's words: .NET says "Could not find a part of the
/// path" for a directory under a regular file and "Access denied" for reading a directory.
/// </summary>
public static class PathProblem
{
    /// <summary>Creates <paramref name="dir"/> (and its parents); a failure becomes a <see cref="SettingsException"/> for <paramref name="key"/>.</summary>
    public static void CreateDirectory(string key, string dir)
    {
        try
        {
            Directory.CreateDirectory(dir);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            var why = File.Exists(dir) ? $"{dir} is a file, not a directory" : Describe(dir, e);
            throw new SettingsException(key, $"cannot create the directory {dir}: {why}");
        }
    }

    /// <summary>The reason a file or directory at <paramref name="path"/> could not be used.</summary>
    public static string Describe(string path, Exception e)
    {
        if (Directory.Exists(path) && e is UnauthorizedAccessException)
        {
            return $"{path} is a directory, not a file";
        }
        // The nearest part of the path that exists: a file there blocks everything below it.
        for (var p = Path.GetDirectoryName(Path.GetFullPath(path)); !string.IsNullOrEmpty(p); p = Path.GetDirectoryName(p))
        {
            if (File.Exists(p))
            {
                return $"{p} is a file, not a directory";
            }
            if (Directory.Exists(p))
            {
                break;
            }
        }
        return e is UnauthorizedAccessException ? $"permission denied ({e.Message})" : e.Message;
    }
}
