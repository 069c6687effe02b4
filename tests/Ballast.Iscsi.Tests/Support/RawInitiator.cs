using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Ballast.Iscsi.Tests.Support;

/// <summary>
/// A deliberately simple iSCSI initiator over a raw socket, for tests that need to send exactly
/// the bytes they want (including malformed ones). One command at a time unless the test
/// drives PDUs itself.
/// </summary>
public sealed class RawInitiator : IAsyncDisposable
{
    private readonly TcpClient _tcp;
    private readonly NetworkStream _stream;
    private uint _itt = 0x1000;

    private RawInitiator(TcpClient tcp)
    {
        _tcp = tcp;
        _stream = tcp.GetStream();
    }

    public NetworkStream Stream => _stream;

    public uint CmdSn { get; set; }
    public uint ExpStatSn { get; set; }
    public uint MaxCmdSn { get; private set; }
    public int TargetMaxRecv { get; private set; } = 8192;
    public Dictionary<string, string> LoginKeys { get; } = [];

    public static async Task<RawInitiator> ConnectAsync(int port)
    {
        var tcp = new TcpClient { NoDelay = true };
        await tcp.ConnectAsync(IPAddress.Loopback, port);
        return new RawInitiator(tcp);
    }

    public uint NextItt() => ++_itt;

    public static byte[] Header(byte opcode, byte flags, int dataLength = 0)
    {
        var h = new byte[48];
        h[0] = opcode;
        h[1] = flags;
        h[5] = (byte)(dataLength >> 16);
        h[6] = (byte)(dataLength >> 8);
        h[7] = (byte)dataLength;
        return h;
    }

    public static void Put32(byte[] h, int offset, uint v) => BinaryPrimitives.WriteUInt32BigEndian(h.AsSpan(offset), v);
    public static uint Get32(byte[] h, int offset) => BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(offset));

    public static byte[] Text(params string[] pairs)
    {
        var ms = new MemoryStream();
        foreach (var p in pairs)
        {
            var b = Encoding.UTF8.GetBytes(p);
            ms.Write(b);
            ms.WriteByte(0);
        }
        return ms.ToArray();
    }

    public static Dictionary<string, string> ParseText(byte[] data)
    {
        var d = new Dictionary<string, string>();
        foreach (var p in Encoding.UTF8.GetString(data).Split('\0', StringSplitOptions.RemoveEmptyEntries))
        {
            var i = p.IndexOf('=', StringComparison.Ordinal);
            d[p[..i]] = p[(i + 1)..];
        }
        return d;
    }

    /// <summary>CRC32C digests on the PDUs this client sends and expects (set after a login that negotiated them).</summary>
    public bool HeaderDigest { get; set; }
    public bool DataDigest { get; set; }

    /// <summary>Corrupts the next data digest sent (for digest tests).</summary>
    public bool CorruptNextDataDigest { get; set; }

    public async Task SendAsync(byte[] header, byte[]? data = null, byte[]? ahs = null) => await _stream.WriteAsync(Pdu(header, data, ahs));

    /// <summary>The PDU's bytes as they go on the wire (digests and padding added), for sending several in one write.</summary>
    public byte[] Pdu(byte[] header, byte[]? data = null, byte[]? ahs = null)
    {
        var ms = new MemoryStream();
        ms.Write(header);
        if (ahs != null)
        {
            ms.Write(ahs);
        }
        if (HeaderDigest)
        {
            var hd = new byte[4];
            BinaryPrimitives.WriteUInt32LittleEndian(hd, Engine.Crc32C.Compute(ms.ToArray()));
            ms.Write(hd);
        }
        if (data is { Length: > 0 })
        {
            var pad = (4 - (data.Length & 3)) & 3;
            var padded = new byte[data.Length + pad];
            data.CopyTo(padded, 0);
            ms.Write(padded);
            if (DataDigest)
            {
                var dd = new byte[4];
                BinaryPrimitives.WriteUInt32LittleEndian(dd, Engine.Crc32C.Compute(padded) ^ (CorruptNextDataDigest ? 1u : 0u));
                CorruptNextDataDigest = false;
                ms.Write(dd);
            }
        }
        return ms.ToArray();
    }

    public async Task SendRawAsync(byte[] bytes) => await _stream.WriteAsync(bytes);

    /// <summary>The next PDU, or null when the target closed the connection (or nothing came within the timeout).</summary>
    public async Task<(byte[] Header, byte[] Data)?> ReadAsync(TimeSpan? timeout = null)
    {
        using var cts = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(10));
        try
        {
            var h = new byte[48];
            await _stream.ReadExactlyAsync(h, cts.Token);
            var ahs = h[4] * 4;
            if (ahs > 0)
            {
                await _stream.ReadExactlyAsync(new byte[ahs], cts.Token);
            }
            if (HeaderDigest)
            {
                var hd = new byte[4];
                await _stream.ReadExactlyAsync(hd, cts.Token);
                if (BinaryPrimitives.ReadUInt32LittleEndian(hd) != Engine.Crc32C.Compute(h))
                {
                    throw new InvalidDataException("bad header digest from the target");
                }
            }
            var len = (h[5] << 16) | (h[6] << 8) | h[7];
            var data = new byte[len + ((4 - (len & 3)) & 3)];
            await _stream.ReadExactlyAsync(data, cts.Token);
            if (DataDigest && len > 0)
            {
                var dd = new byte[4];
                await _stream.ReadExactlyAsync(dd, cts.Token);
                if (BinaryPrimitives.ReadUInt32LittleEndian(dd) != Engine.Crc32C.Compute(data))
                {
                    throw new InvalidDataException("bad data digest from the target");
                }
            }
            var op = h[0] & 0x3f;
            if (op is 0x21 or 0x22 or 0x23 or 0x24 or 0x26 or 0x3f || (op == 0x25 && (h[1] & 1) != 0) || (op == 0x20 && Get32(h, 16) != 0xffffffff))
            {
                ExpStatSn = Get32(h, 24) + 1;
            }
            if (op != 0x23)
            {
                MaxCmdSn = Get32(h, 32);
            }
            return (h, data[..len]);
        }
        catch (Exception e) when (e is EndOfStreamException or IOException or OperationCanceledException or SocketException)
        {
            return null;
        }
    }

    /// <summary>True when the target closed the connection within the timeout (reads until EOF, dropping PDUs).</summary>
    public async Task<bool> ClosedByTargetAsync(TimeSpan timeout)
    {
        var until = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < until)
        {
            using var cts = new CancellationTokenSource(until - DateTime.UtcNow);
            try
            {
                var n = await _stream.ReadAsync(new byte[4096], cts.Token);
                if (n == 0)
                {
                    return true;
                }
            }
            catch (OperationCanceledException)
            {
                return false;
            }
            catch (IOException)
            {
                return true;
            }
        }
        return false;
    }

    /// <summary>Login with no authentication, straight to full feature phase (CSG=1, NSG=3). Returns the login status.</summary>
    public async Task<int> LoginAsync(string? targetName, string initiator = "iqn.2026-11.test:raw", params string[] extra)
    {
        var keys = new List<string> { $"InitiatorName={initiator}", targetName is null ? "SessionType=Discovery" : $"TargetName={targetName}" };
        if (targetName != null)
        {
            keys.Add("SessionType=Normal");
        }
        foreach (var d in (string[])["HeaderDigest=None", "DataDigest=None", "MaxRecvDataSegmentLength=262144", "ImmediateData=Yes", "InitialR2T=No", "MaxBurstLength=1048576", "FirstBurstLength=262144"])
        {
            if (!extra.Any(e => e.StartsWith(d[..(d.IndexOf('=', StringComparison.Ordinal) + 1)], StringComparison.Ordinal)))
            {
                keys.Add(d);
            }
        }
        keys.AddRange(extra);
        var data = Text([.. keys]);
        var h = Header(0x43, 0x80 | (1 << 2) | 3, data.Length);
        h[8] = 0x80;
        h[13] = 0x01; // ISID
        Put32(h, 16, NextItt());
        Put32(h, 24, CmdSn);
        await SendAsync(h, data);
        var r = await ReadAsync() ?? throw new IOException("no login response");
        foreach (var (k, v) in ParseText(r.Data))
        {
            LoginKeys[k] = v;
        }
        if (LoginKeys.TryGetValue("MaxRecvDataSegmentLength", out var m))
        {
            TargetMaxRecv = int.Parse(m);
        }
        ExpStatSn = Get32(r.Header, 24) + 1;
        MaxCmdSn = Get32(r.Header, 32);
        return (r.Header[36] << 8) | r.Header[37];
    }

    public sealed record ScsiResult(byte Status, byte[] Data, byte[] Sense, byte ResponseFlags, uint Residual)
    {
        public byte SenseKey => Sense.Length > 2 ? (byte)((Sense[0] & 0x7f) >= 0x72 ? Sense[1] & 0x0f : Sense[2] & 0x0f) : (byte)0;
        public byte Asc => Sense.Length > 12 ? ((Sense[0] & 0x7f) >= 0x72 ? Sense[2] : Sense[12]) : (byte)0;
        public byte Ascq => Sense.Length > 13 ? ((Sense[0] & 0x7f) >= 0x72 ? Sense[3] : Sense[13]) : (byte)0;
    }

    /// <summary>
    /// The header of a WRITE whose <paramref name="length"/> bytes all go as immediate data (final,
    /// simple task): next ITT (read it at offset 16), next CmdSN, current ExpStatSN. Send it with its data.
    /// </summary>
    public byte[] WriteCommand(byte[] cdb, int length)
    {
        var h = Header(0x01, 0xa1, length);
        Put32(h, 16, NextItt());
        Put32(h, 20, (uint)length);
        Put32(h, 24, CmdSn++);
        Put32(h, 28, ExpStatSn);
        cdb.CopyTo(h, 32);
        return h;
    }

    /// <summary>Sends a SCSI command (write data goes as immediate data, the rest answering R2Ts) and waits for its status.</summary>
    public async Task<ScsiResult?> CommandAsync(byte[] cdb, int readLength = 0, byte[]? writeData = null, ulong lun = 0, TimeSpan? timeout = null)
    {
        var itt = NextItt();
        var write = writeData ?? [];
        var immediate = Math.Min(write.Length, Math.Min(TargetMaxRecv, 65536));
        var flags = (byte)(0x80 | (readLength > 0 ? 0x40 : 0) | (write.Length > 0 ? 0x20 : 0) | 0x01);
        var h = Header(0x01, flags, immediate);
        BinaryPrimitives.WriteUInt64BigEndian(h.AsSpan(8), lun);
        Put32(h, 16, itt);
        Put32(h, 20, (uint)(readLength > 0 ? readLength : write.Length));
        Put32(h, 24, CmdSn++);
        Put32(h, 28, ExpStatSn);
        cdb.CopyTo(h, 32);
        await SendAsync(h, immediate > 0 ? write[..immediate] : null);
        var data = new MemoryStream();
        while (true)
        {
            var r = await ReadAsync(timeout);
            if (r is null)
            {
                return null;
            }
            var (rh, rd) = r.Value;
            var op = rh[0] & 0x3f;
            if (op == 0x31)
            {
                // R2T: send the requested range in one Data-Out sequence.
                var ttt = Get32(rh, 20);
                var offset = (int)Get32(rh, 40);
                var length = (int)Get32(rh, 44);
                var sn = 0u;
                for (var o = 0; o < length; o += TargetMaxRecv)
                {
                    var n = Math.Min(TargetMaxRecv, length - o);
                    var d = Header(0x05, (byte)(o + n == length ? 0x80 : 0), n);
                    BinaryPrimitives.WriteUInt64BigEndian(d.AsSpan(8), lun);
                    Put32(d, 16, itt);
                    Put32(d, 20, ttt);
                    Put32(d, 28, ExpStatSn);
                    Put32(d, 36, sn++);
                    Put32(d, 40, (uint)(offset + o));
                    await SendAsync(d, write.AsSpan(offset + o, n).ToArray());
                }
            }
            else if (op == 0x25)
            {
                data.Position = Get32(rh, 40);
                data.Write(rd);
                if ((rh[1] & 0x01) != 0)
                {
                    return new ScsiResult(rh[3], data.ToArray(), [], rh[1], Get32(rh, 44));
                }
            }
            else if (op == 0x21)
            {
                var sense = rd.Length >= 2 ? rd.AsSpan(2, (rd[0] << 8) | rd[1]).ToArray() : [];
                return new ScsiResult(rh[3], data.ToArray(), sense, rh[1], Get32(rh, 44));
            }
            else if (op == 0x20 && Get32(rh, 20) != 0xffffffff)
            {
                // Target ping: answer it.
                var n = Header(0x40, 0x80);
                Put32(n, 16, 0xffffffff);
                Put32(n, 20, Get32(rh, 20));
                Put32(n, 24, CmdSn);
                await SendAsync(n);
            }
        }
    }

    public static byte[] Read10(uint lba, ushort blocks) => [0x28, 0, (byte)(lba >> 24), (byte)(lba >> 16), (byte)(lba >> 8), (byte)lba, 0, (byte)(blocks >> 8), (byte)blocks, 0];
    public static byte[] Write10(uint lba, ushort blocks) => [0x2a, 0, (byte)(lba >> 24), (byte)(lba >> 16), (byte)(lba >> 8), (byte)lba, 0, (byte)(blocks >> 8), (byte)blocks, 0];

    public async Task LogoutAsync()
    {
        var h = Header(0x46, 0x80);
        Put32(h, 16, NextItt());
        Put32(h, 24, CmdSn);
        Put32(h, 28, ExpStatSn);
        await SendAsync(h);
        await ReadAsync(TimeSpan.FromSeconds(5));
    }

    public async ValueTask DisposeAsync()
    {
        await _stream.DisposeAsync();
        _tcp.Dispose();
    }
}
