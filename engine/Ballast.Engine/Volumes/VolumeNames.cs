namespace Ballast.Engine.Volumes;

/// <summary>The rule for volume and snapshot names, for callers that validate before asking the pool.</summary>
public static class VolumeNames
{
    /// <summary>Null if <paramref name="name"/> is a valid volume name, else why not.</summary>
    public static string? Check(string name) => VolumeCatalog.CheckName(name);
}
