using Ballast.Control;
using System.Net;
using System.Net.Sockets;
using Ballast.Daemon.Configuration;
using Ballast.Nbd;

namespace Ballast.Daemon.Tests.Configuration;

public class SettingsTests
{
    private static Dictionary<string, IReadOnlyList<string>> Flags(params (string Key, string[] Values)[] flags) =>
        flags.ToDictionary(f => f.Key, f => (IReadOnlyList<string>)f.Values);

    [TestCase("1GiB", 1L << 30)]
    [TestCase("1.5GiB", 3L << 29)]
    [TestCase("512m", 512L << 20)]
    [TestCase("10G", 10L << 30)]
    [TestCase("4096", 4096L)]
    [TestCase("2 TiB", 2L << 40)]
    public void Sizes_parse_with_binary_units(string text, long bytes)
    {
        Assert.That(SizeText.TryParse(text, out var b), Is.True);
        Assert.That(b, Is.EqualTo(bytes));
    }

    [TestCase("", "is not a size")]
    [TestCase("-1GiB", "is not a size")]
    [TestCase("0", "is 0; a size must be more than 0")]
    [TestCase("0 GiB", "is 0; a size must be more than 0")]
    [TestCase("1.5", "is not a whole number of bytes")]
    [TestCase("lots", "is not a size")]
    [TestCase("99999999999999999999TiB", "is too large")]
    public void Bad_sizes_are_refused_with_the_reason(string text, string problem)
    {
        Assert.That(SizeText.TryParse(text, out _), Is.False);
        Assert.That(SizeText.Problem(text), Is.EqualTo(problem));
    }

    [Test]
    public void A_good_size_has_no_problem() => Assert.That(SizeText.Problem("1GiB"), Is.Null);

    [Test]
    public void Endpoints_parse_ipv4_ipv6_wildcard_and_unix()
    {
        Assert.That(EndpointText.TryParse("127.0.0.1:10809", out var a, out _), Is.True);
        Assert.That(a, Is.EqualTo(new IPEndPoint(IPAddress.Loopback, 10809)));
        Assert.That(EndpointText.TryParse("[::1]:1", out var b, out _), Is.True);
        Assert.That(b, Is.EqualTo(new IPEndPoint(IPAddress.IPv6Loopback, 1)));
        Assert.That(EndpointText.TryParse(":10809", out var c, out _), Is.True);
        Assert.That(((IPEndPoint)c).Address, Is.EqualTo(IPAddress.Any));
        Assert.That(EndpointText.TryParse("unix:/run/ballast/nbd.sock", out var d, out _), Is.True);
        Assert.That(d, Is.TypeOf<UnixDomainSocketEndPoint>());
    }

    [TestCase("10809", "ADDRESS:PORT")]
    [TestCase("1.2.3.4:99999", "port")]
    [TestCase("example.com:1", "not an IP address")]
    [TestCase("unix:relative", "absolute path")]
    public void Bad_endpoints_say_what_is_wrong(string text, string problem)
    {
        Assert.That(EndpointText.TryParse(text, out _, out var why), Is.False);
        Assert.That(why, Does.Contain(problem));
    }

    [Test]
    public void Defaults_serve_nbd_on_loopback_10809()
    {
        var s = SettingsLoader.Load(Flags(), configFile: null);
        Assert.That(s.NbdListen, Is.EqualTo(new[] { new IPEndPoint(IPAddress.Loopback, 10809) }));
        Assert.That(s.NbdTls, Is.EqualTo(NbdTlsMode.Off));
        Assert.That(s.Volumes, Is.Empty);
    }

    [Test]
    public void Volumes_parse_name_size_and_block_size()
    {
        var s = SettingsLoader.Load(Flags(("volume", ["demo:1GiB", "db:10GiB:512"])), null);
        Assert.That(s.Volumes, Is.EqualTo(new[] { new VolumeSpec("demo", 1L << 30, 4096), new VolumeSpec("db", 10L << 30, 512) }));
    }

    [TestCase("demo", "NAME:SIZE")]
    [TestCase("bad name:1GiB", "invalid name")]
    [TestCase("v:1GiB:1024", "512 or 4096")]
    [TestCase("v:1000", "outside 4 KiB")]
    [TestCase("v:5000", "multiple")]
    [TestCase("v:1GiB,w:1GiB", "not a size")]
    public void Bad_volumes_name_the_setting_and_the_problem(string spec, string problem)
    {
        var e = Assert.Throws<SettingsException>(() => SettingsLoader.Load(Flags(("volume", [spec])), null))!;
        Assert.That(e.Key, Is.EqualTo("volume"));
        Assert.That(e.Message, Does.Contain(problem));
    }

    [Test]
    public void The_config_file_mirrors_the_flags_and_flags_win()
    {
        var path = Path.GetTempFileName();
        try
        {
            File.WriteAllText(path, """
                {
                  // comments are allowed
                  "data-dir": "/tmp/from-config",
                  "nbd-listen": ["127.0.0.1:1111", "unix:/tmp/x.sock"],
                  "nbd-max-connections": 7,
                  "volume": ["a:1GiB"],
                }
                """);
            var s = SettingsLoader.Load(Flags(("nbd-listen", ["127.0.0.1:2222"])), path);
            Assert.That(s.DataDir, Is.EqualTo("/tmp/from-config"));
            Assert.That(s.NbdMaxConnections, Is.EqualTo(7));
            Assert.That(s.NbdListen, Is.EqualTo(new[] { new IPEndPoint(IPAddress.Loopback, 2222) }), "the flag replaces the file's list");
            Assert.That(s.Volumes.Single().Name, Is.EqualTo("a"));
            Assert.That(s.ConfigFile, Is.EqualTo(path));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [TestCase("""{"nbd-max-connections": 0}""", "nbd-max-connections", "from 1 to")]
    [TestCase("""{"no-such-setting": 1}""", "no-such-setting", "unknown setting")]
    [TestCase("""{"log-level": "loud"}""", "log-level", "not one of")]
    [TestCase("""{"data-dir": ["a", "b"]}""", "data-dir", "one value")]
    [TestCase("""[1, 2]""", "config", "one JSON object")]
    [TestCase("""{"nbd-tls": "require"}""", "nbd-tls", "needs --nbd-tls-certificate")]
    [TestCase("""{ not json""", "config", "not valid JSON at line 1, column 3")]
    [TestCase("{\n  \"pool-size\": \"1GiB\",\n  \"volume\": [\"a:1GiB\"\n", "config", "not valid JSON at line 4")]
    public void A_bad_config_value_stops_with_the_key_and_what_is_allowed(string json, string key, string problem)
    {
        var path = Path.GetTempFileName();
        try
        {
            File.WriteAllText(path, json);
            var e = Assert.Throws<SettingsException>(() => SettingsLoader.Load(Flags(), path))!;
            Assert.That(e.Key, Is.EqualTo(key));
            Assert.That(e.Message, Does.Contain(problem));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Test]
    public void Paths_that_cannot_be_used_are_explained_in_an_operators_words()
    {
        var file = Path.GetTempFileName();
        try
        {
            var e = Assert.Throws<SettingsException>(() => PathProblem.CreateDirectory("data-dir", Path.Combine(file, "sub")))!;
            Assert.That(e.Key, Is.EqualTo("data-dir"));
            Assert.That(e.Message, Does.Contain($"{file} is a file, not a directory"));
            var atFile = Assert.Throws<SettingsException>(() => PathProblem.CreateDirectory("api-socket", file))!;
            Assert.That(atFile.Message, Does.Contain($"{file} is a file, not a directory"));
            var config = Assert.Throws<SettingsException>(() => SettingsLoader.Load(Flags(), Path.GetDirectoryName(file)))!;
            Assert.That(config.Key, Is.EqualTo("config"));
            Assert.That(config.Message, Does.Contain("is a directory, not a file"));
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Test]
    public void Every_setting_has_help_and_a_value_name()
    {
        foreach (var def in SettingsSchema.All)
        {
            Assert.That(def.Help, Is.Not.Empty, def.Key);
            Assert.That(def.ValueName, Is.Not.Empty, def.Key);
            Assert.That(def.Key, Does.Match("^[a-z][a-z0-9-]*$"), def.Key);
        }
    }
}
