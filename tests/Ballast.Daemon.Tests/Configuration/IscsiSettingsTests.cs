using System.Net;
using Ballast.Daemon.Configuration;

namespace Ballast.Daemon.Tests.Configuration;

/// <summary>The iSCSI settings: defaults, the config file's shapes, secrets, and a message naming the key for each bad value.</summary>
public class IscsiSettingsTests
{
    private readonly List<string> _files = [];

    [TearDown]
    public void DeleteFiles()
    {
        foreach (var f in _files)
        {
            File.Delete(f);
        }
        _files.Clear();
    }

    private static Dictionary<string, IReadOnlyList<string>> Flags(params (string Key, string[] Values)[] flags) =>
        flags.ToDictionary(f => f.Key, f => (IReadOnlyList<string>)f.Values);

    /// <summary>A file with the given text and mode (owner-only unless told).</summary>
    private string File600(string text, UnixFileMode mode = UnixFileMode.UserRead | UnixFileMode.UserWrite)
    {
        var path = Path.GetTempFileName();
        _files.Add(path);
        File.WriteAllText(path, text);
        File.SetUnixFileMode(path, mode);
        return path;
    }

    [Test]
    public void Defaults_serve_iscsi_on_loopback_3260_with_the_ballast_prefix_and_no_chap()
    {
        var s = SettingsLoader.Load(Flags(), configFile: null);
        Assert.That(s.IscsiListen, Is.EqualTo(new[] { new IPEndPoint(IPAddress.Loopback, 3260) }));
        Assert.That(s.IscsiIqnPrefix, Is.EqualTo("iqn.2026-11.io.ballast"));
        Assert.That(s.IscsiEnabled, Is.True);
        Assert.That(s.IscsiChap.Credentials, Is.Null);
        Assert.That(s.IscsiMutualChap.Credentials, Is.Null);
        Assert.That(s.IscsiGroups, Is.Empty);
        Assert.That(s.IscsiStateDirectory, Is.EqualTo(Path.Combine(s.DataDir, "iscsi")));
    }

    [Test]
    public void Listen_off_turns_the_target_off()
    {
        var s = SettingsLoader.Load(Flags(("iscsi-listen", ["off"])), configFile: null);
        Assert.That(s.IscsiEnabled, Is.False);
        Assert.That(s.IscsiListen, Is.Empty);
    }

    [Test]
    public void The_config_file_gives_portals_prefix_groups_and_chap_with_an_inline_secret()
    {
        var path = File600("""
            {
              "iscsi-listen": ["127.0.0.1:3261", "[::1]:3262"],
              "iscsi-iqn-prefix": "iqn.2030-01.com.example:store",
              "iscsiGroups": [{"name": "db", "volumes": ["db-data", "db-log"]}],
              "iscsi-chap-user": "initiator",
              "iscsi-chap-secret": "initiator-secret-1",
              "iscsi-mutual-chap-user": "target",
              "iscsi-mutual-chap-secret": "target-secret-22",
            }
            """);
        var s = SettingsLoader.Load(Flags(), path);
        Assert.That(s.IscsiListen, Is.EqualTo(new EndPoint[] { new IPEndPoint(IPAddress.Loopback, 3261), new IPEndPoint(IPAddress.IPv6Loopback, 3262) }));
        Assert.That(s.IscsiIqnPrefix, Is.EqualTo("iqn.2030-01.com.example:store"));
        Assert.That(s.IscsiGroups.Single().Name, Is.EqualTo("db"));
        Assert.That(s.IscsiGroups.Single().Volumes, Is.EqualTo(new[] { "db-data", "db-log" }));
        Assert.That(s.IscsiChap.Credentials, Is.EqualTo(new Ballast.Iscsi.ChapSecret("initiator", "initiator-secret-1")));
        Assert.That(s.IscsiMutualChap.Credentials, Is.EqualTo(new Ballast.Iscsi.ChapSecret("target", "target-secret-22")));
        Assert.That(s.IscsiChap.ToString(), Does.Not.Contain("initiator-secret-1"), "settings print without the secret");
        Assert.That(s.IscsiChap.Credentials!.ToString(), Does.Not.Contain("initiator-secret-1"));
    }

    [Test]
    public void Secrets_come_from_owner_only_files_without_their_trailing_newline()
    {
        var secret = File600("from-a-file-secret\n");
        var s = SettingsLoader.Load(Flags(("iscsi-chap-user", ["alice"]), ("iscsi-chap-secret-file", [secret]), ("iscsi-group", ["g=a,b,c"])), configFile: null);
        Assert.That(s.IscsiChap.Credentials, Is.EqualTo(new Ballast.Iscsi.ChapSecret("alice", "from-a-file-secret")));
        Assert.That(s.IscsiGroups.Single().Volumes, Is.EqualTo(new[] { "a", "b", "c" }));
    }

    [TestCase("""{"iscsi-listen": ["unix:/tmp/x.sock"]}""", "iscsi-listen", "not unix sockets")]
    [TestCase("""{"iscsi-listen": ["off", "127.0.0.1:3260"]}""", "iscsi-listen", "cannot be combined")]
    [TestCase("""{"iscsi-listen": ["127.0.0.1:70000"]}""", "iscsi-listen", "from 0 to 65535")]
    [TestCase("""{"iscsi-iqn-prefix": "IQN.Upper"}""", "iscsi-iqn-prefix", "is not an iSCSI name prefix")]
    [TestCase("""{"iscsi-iqn-prefix": "iqn.2026-11.io.ballast:"}""", "iscsi-iqn-prefix", "iqn.YYYY-MM")]
    [TestCase("""{"iscsi-max-connections": 0}""", "iscsi-max-connections", "from 1 to")]
    [TestCase("""{"iscsiGroups": [{"name": "db"}]}""", "iscsiGroups", "each entry is")]
    [TestCase("""{"iscsiGroups": [{"name": "db", "volumes": []}]}""", "iscsi-group", "NAME=VOLUME")]
    [TestCase("""{"iscsiGroups": [{"name": "d b", "volumes": ["x"]}]}""", "iscsi-group", "group name")]
    [TestCase("""{"iscsiGroups": [{"name": "db", "volumes": ["x", "x"]}]}""", "iscsi-group", "twice")]
    [TestCase("""{"iscsiGroups": [{"name": "db", "volumes": ["x/y"]}]}""", "iscsi-group", "not a volume name")]
    [TestCase("""{"iscsiGroups": [{"name": "a_b", "volumes": ["x"]}, {"name": "a-b", "volumes": ["y"]}]}""", "iscsi-group", "same target name")]
    [TestCase("""{"iscsi-chap-user": "alice"}""", "iscsi-chap-secret", "no secret")]
    [TestCase("""{"iscsi-chap-secret": "some-secret-here"}""", "iscsi-chap-user", "no user name")]
    [TestCase("""{"iscsi-chap-user": "", "iscsi-chap-secret": "x"}""", "iscsi-chap-user", "1 to 255")]
    [TestCase("""{"iscsi-mutual-chap-user": "t", "iscsi-mutual-chap-secret": "target-secret"}""", "iscsi-mutual-chap-user", "needs initiator CHAP")]
    [TestCase("""{"iscsi-chap-user": "a", "iscsi-chap-secret": "same-secret", "iscsi-mutual-chap-user": "t", "iscsi-mutual-chap-secret": "same-secret"}""", "iscsi-mutual-chap-secret", "must differ")]
    [TestCase("""{"iscsi-chap-secret": ["a", "b"]}""", "iscsi-chap-secret", "one value")]
    public void A_bad_iscsi_value_stops_with_the_key_and_what_is_allowed(string json, string key, string problem)
    {
        var e = Assert.Throws<SettingsException>(() => SettingsLoader.Load(Flags(), File600(json)))!;
        Assert.That(e.Key, Is.EqualTo(key));
        Assert.That(e.Message, Does.Contain(problem));
    }

    [Test]
    public void A_secret_longer_than_255_bytes_is_refused_without_showing_it()
    {
        var secret = new string('s', 256);
        var e = Assert.Throws<SettingsException>(() => SettingsLoader.Load(Flags(), File600($$"""{"iscsi-chap-user": "a", "iscsi-chap-secret": "{{secret}}"}""")))!;
        Assert.That(e.Key, Is.EqualTo("iscsi-chap-secret"));
        Assert.That(e.Message, Does.Contain("1 to 255 bytes").And.Not.Contain(secret));
    }

    [Test]
    public void A_secret_file_others_can_read_is_refused()
    {
        var secret = File600("readable-secret", UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.OtherRead);
        var e = Assert.Throws<SettingsException>(() => SettingsLoader.Load(Flags(("iscsi-chap-user", ["a"]), ("iscsi-chap-secret-file", [secret])), configFile: null))!;
        Assert.That(e.Key, Is.EqualTo("iscsi-chap-secret-file"));
        Assert.That(e.Message, Does.Contain("chmod 600").And.Not.Contain("readable-secret"));
    }

    [Test]
    public void A_missing_secret_file_names_the_key()
    {
        var e = Assert.Throws<SettingsException>(() => SettingsLoader.Load(Flags(("iscsi-mutual-chap-secret-file", ["/nonexistent/secret"])), configFile: null))!;
        Assert.That(e.Key, Is.EqualTo("iscsi-mutual-chap-secret-file"));
        Assert.That(e.Message, Does.Contain("does not exist"));
    }

    [Test]
    public void An_inline_secret_in_a_config_file_others_can_read_is_refused()
    {
        var path = File600("""{"iscsi-chap-user": "a", "iscsi-chap-secret": "world-readable"}""", UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
        var e = Assert.Throws<SettingsException>(() => SettingsLoader.Load(Flags(), path))!;
        Assert.That(e.Key, Is.EqualTo("iscsi-chap-secret"));
        Assert.That(e.Message, Does.Contain("readable by others").And.Contain("iscsi-chap-secret-file").And.Not.Contain("world-readable\""));
    }

    [Test]
    public void Both_an_inline_secret_and_a_secret_file_is_ambiguous()
    {
        var secret = File600("file-secret");
        var path = File600("""{"iscsi-chap-user": "a", "iscsi-chap-secret": "inline-secret"}""");
        var e = Assert.Throws<SettingsException>(() => SettingsLoader.Load(Flags(("iscsi-chap-secret-file", [secret])), path))!;
        Assert.That(e.Key, Is.EqualTo("iscsi-chap-secret"));
        Assert.That(e.Message, Does.Contain("not both"));
    }

    [Test]
    public void Secrets_have_no_flag()
    {
        var secrets = Ballast.Daemon.Configuration.SettingsSchema.All.Where(d => d.ConfigOnly).Select(d => d.Key);
        Assert.That(secrets, Is.EquivalentTo(new[] { "iscsi-chap-secret", "iscsi-mutual-chap-secret" }));
        var options = DaemonCommand.Build().Options.Select(o => o.Name);
        Assert.That(options, Does.Not.Contain("--iscsi-chap-secret").And.Not.Contain("--iscsi-mutual-chap-secret"));
        Assert.That(options, Does.Contain("--iscsi-chap-secret-file").And.Contain("--iscsi-listen").And.Contain("--iscsi-iqn-prefix"));
    }
}
