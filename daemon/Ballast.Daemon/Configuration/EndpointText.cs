using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace Ballast.Daemon.Configuration;

/// <summary>Listen addresses: ADDR:PORT, [IPv6]:PORT, :PORT (all addresses) or unix:/path.</summary>
public static class EndpointText
{
    public static bool TryParse(string text, out EndPoint endpoint, out string? problem)
    {
        endpoint = null!;
        problem = null;
        var s = text.Trim();
        if (s.StartsWith("unix:", StringComparison.Ordinal))
        {
            var path = s[5..];
            if (path.Length == 0 || path[0] != '/')
            {
                problem = "a unix socket needs an absolute path, like unix:/run/ballast/nbd.sock";
                return false;
            }
            if (System.Text.Encoding.UTF8.GetByteCount(path) > 107)
            {
                problem = "a unix socket path must be shorter than 108 bytes";
                return false;
            }
            endpoint = new UnixDomainSocketEndPoint(path);
            return true;
        }
        var colon = s.LastIndexOf(':');
        if (colon < 0)
        {
            problem = "expected ADDRESS:PORT (like 127.0.0.1:10809 or [::1]:10809) or unix:/path";
            return false;
        }
        var host = s[..colon];
        var portText = s[(colon + 1)..];
        if (!int.TryParse(portText, NumberStyles.None, CultureInfo.InvariantCulture, out var port) || port > 65535)
        {
            problem = $"port \"{portText}\" is not a number from 0 to 65535";
            return false;
        }
        if (host.StartsWith('[') && host.EndsWith(']'))
        {
            host = host[1..^1];
        }
        IPAddress address;
        if (host.Length == 0 || host == "*")
        {
            address = IPAddress.Any;
        }
        else if (host.Equals("localhost", StringComparison.OrdinalIgnoreCase))
        {
            address = IPAddress.Loopback;
        }
        else if (!IPAddress.TryParse(host, out address!))
        {
            problem = $"\"{host}\" is not an IP address (host names are not resolved for listening)";
            return false;
        }
        endpoint = new IPEndPoint(address, port);
        return true;
    }

    public static string Format(EndPoint endpoint) => endpoint switch
    {
        UnixDomainSocketEndPoint u => $"unix:{u}",
        IPEndPoint { AddressFamily: AddressFamily.InterNetworkV6 } ip => $"[{ip.Address}]:{ip.Port}",
        _ => endpoint.ToString() ?? "",
    };
}
