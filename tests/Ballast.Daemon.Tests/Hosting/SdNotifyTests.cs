using System.Net.Sockets;
using System.Text;
using Ballast.Daemon.Hosting;

namespace Ballast.Daemon.Tests.Hosting;

/// <summary>The notify writer against a real datagram socket, as systemd listens.</summary>
public class SdNotifyTests
{
    [Test]
    public void Notify_sends_one_datagram_to_a_path_socket()
    {
        var path = Path.Combine(Path.GetTempPath(), $"notify-{Guid.NewGuid():N}.sock");
        using var listener = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
        listener.Bind(new UnixDomainSocketEndPoint(path));
        try
        {
            using var notify = new SdNotify(path);
            Assert.That(notify.Enabled, Is.True);
            Assert.That(notify.Notify("READY=1\nSTATUS=serving 1 volume(s)"), Is.True);
            var buf = new byte[1024];
            listener.ReceiveTimeout = 5000;
            var n = listener.Receive(buf);
            Assert.That(Encoding.UTF8.GetString(buf, 0, n), Is.EqualTo("READY=1\nSTATUS=serving 1 volume(s)"));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Test]
    public void Notify_reaches_an_abstract_socket()
    {
        var name = $"ballast-test-{Guid.NewGuid():N}";
        using var listener = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
        listener.Bind(new UnixDomainSocketEndPoint("\0" + name));
        using var notify = new SdNotify("@" + name);
        Assert.That(notify.Notify("STOPPING=1"), Is.True);
        var buf = new byte[64];
        listener.ReceiveTimeout = 5000;
        Assert.That(Encoding.UTF8.GetString(buf, 0, listener.Receive(buf)), Is.EqualTo("STOPPING=1"));
    }

    [TestCase(null)]
    [TestCase("")]
    [TestCase("relative/path")]
    public void Without_a_usable_notify_socket_nothing_is_sent(string? socket)
    {
        using var notify = new SdNotify(socket);
        Assert.That(notify.Enabled, Is.False);
        Assert.That(notify.Notify("READY=1"), Is.False);
    }

    [Test]
    public void A_socket_nobody_listens_on_does_not_throw()
    {
        using var notify = new SdNotify("/nonexistent/notify.sock");
        Assert.That(notify.Notify("READY=1"), Is.False);
    }
}
