using System.Buffers.Binary;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Text;

namespace Ballast.TestSupport;

/// <summary>
/// A deliberately low-level NBD client: it sends exactly the bytes a test asks for, so tests
/// can break every rule of the protocol and see what the server does.
/// </summary>
public sealed class NbdRawClient : IAsyncDisposable
{
    public const ulong InitPasswd = 0x4e42444d41474943;
    public const ulong IHaveOpt = 0x49484156454F5054;
    public const ulong OptionReplyMagic = 0x3e889045565a9;
    public const uint RequestMagic = 0x25609513;
    public const uint SimpleReplyMagic = 0x67446698;
    public const uint StructuredReplyMagic = 0x668e33ef;

    public const uint OptExportName = 1, OptAbort = 2, OptList = 3, OptStartTls = 5, OptInfo = 6, OptGo = 7,
        OptStructuredReply = 8, OptListMetaContext = 9, OptSetMetaContext = 10;
    public const uint RepAck = 1, RepServer = 2, RepInfo = 3, RepMetaContext = 4;
    public const uint ErrUnsup = 0x80000001, ErrPolicy = 0x80000002, ErrInvalid = 0x80000003, ErrTlsReqd = 0x80000005,
        ErrUnknown = 0x80000006, ErrTooBig = 0x80000009;
    public const ushort CmdRead = 0, CmdWrite = 1, CmdDisc = 2, CmdFlush = 3, CmdTrim = 4, CmdCache = 5, CmdWriteZeroes = 6, CmdBlockStatus = 7;
    public const ushort FlagFua = 1, FlagNoHole = 2, FlagDf = 4, FlagReqOne = 8, FlagFastZero = 16;
    public const uint EPerm = 1, EIo = 5, EInval = 22, ENoSpc = 28;

    private readonly Socket _socket;
    private Stream _stream;

    private NbdRawClient(Socket socket)
    {
        _socket = socket;
        _stream = new NetworkStream(socket, ownsSocket: true);
    }

    public Stream Stream => _stream;

    public static async Task<NbdRawClient> ConnectAsync(IPEndPoint ep, CancellationToken ct = default)
    {
        var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        await s.ConnectAsync(ep, ct);
        return new NbdRawClient(s);
    }

    /// <summary>Connects, checks the greeting and answers with fixed newstyle (and no zeroes if asked).</summary>
    public static async Task<NbdRawClient> HandshakeAsync(IPEndPoint ep, bool noZeroes = true, CancellationToken ct = default)
    {
        var c = await ConnectAsync(ep, ct);
        var (magic, opt, flags) = await c.ReadGreetingAsync(ct);
        Assert.That((magic, opt), Is.EqualTo((InitPasswd, IHaveOpt)));
        Assert.That(flags & 3, Is.EqualTo(3), "server offers fixed newstyle and no zeroes");
        await c.SendU32Async(noZeroes ? 3u : 1u, ct);
        return c;
    }

    /// <summary>Handshake, optional structured replies and base:allocation, then NBD_OPT_GO.</summary>
    public static async Task<(NbdRawClient Client, ulong Size, ushort Flags)> OpenAsync(IPEndPoint ep, string export, bool structured = false, bool metaContext = false, CancellationToken ct = default)
    {
        var c = await HandshakeAsync(ep, ct: ct);
        if (structured)
        {
            await c.SendOptionAsync(OptStructuredReply, [], ct);
            Assert.That((await c.ReadOptionReplyAsync(ct)).Type, Is.EqualTo(RepAck));
        }
        if (metaContext)
        {
            await c.SendOptionAsync(OptSetMetaContext, MetaContextData(export, "base:allocation"), ct);
            Assert.That((await c.ReadOptionReplyAsync(ct)).Type, Is.EqualTo(RepMetaContext));
            Assert.That((await c.ReadOptionReplyAsync(ct)).Type, Is.EqualTo(RepAck));
        }
        await c.SendOptionAsync(OptGo, InfoData(export), ct);
        ulong size = 0;
        ushort flags = 0;
        while (true)
        {
            var r = await c.ReadOptionReplyAsync(ct);
            if (r.Type == RepInfo && BinaryPrimitives.ReadUInt16BigEndian(r.Data) == 0)
            {
                size = BinaryPrimitives.ReadUInt64BigEndian(r.Data.AsSpan(2));
                flags = BinaryPrimitives.ReadUInt16BigEndian(r.Data.AsSpan(10));
                continue;
            }
            Assert.That(r.Type, Is.EqualTo(RepAck), $"GO {export} failed: 0x{r.Type:x} {Encoding.UTF8.GetString(r.Data)}");
            return (c, size, flags);
        }
    }

    public async Task<(ulong Magic, ulong Opt, ushort Flags)> ReadGreetingAsync(CancellationToken ct = default)
    {
        var b = await ReadAsync(18, ct);
        return (BinaryPrimitives.ReadUInt64BigEndian(b), BinaryPrimitives.ReadUInt64BigEndian(b.AsSpan(8)), BinaryPrimitives.ReadUInt16BigEndian(b.AsSpan(16)));
    }

    public Task SendU32Async(uint v, CancellationToken ct = default)
    {
        var b = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(b, v);
        return _stream.WriteAsync(b, ct).AsTask();
    }

    public Task SendOptionAsync(uint option, byte[] data, CancellationToken ct = default, ulong magic = IHaveOpt, uint? lengthOverride = null)
    {
        var b = new byte[16 + data.Length];
        BinaryPrimitives.WriteUInt64BigEndian(b, magic);
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(8), option);
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(12), lengthOverride ?? (uint)data.Length);
        data.CopyTo(b, 16);
        return _stream.WriteAsync(b, ct).AsTask();
    }

    public async Task<(uint Option, uint Type, byte[] Data)> ReadOptionReplyAsync(CancellationToken ct = default)
    {
        var h = await ReadAsync(20, ct);
        Assert.That(BinaryPrimitives.ReadUInt64BigEndian(h), Is.EqualTo(OptionReplyMagic), "option reply magic");
        var len = BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(16));
        Assert.That(len, Is.LessThan(1 << 20), "option reply length");
        var data = await ReadAsync((int)len, ct);
        return (BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(8)), BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(12)), data);
    }

    public static byte[] InfoData(string name, params ushort[] infos)
    {
        var n = Encoding.UTF8.GetBytes(name);
        var b = new byte[4 + n.Length + 2 + (2 * infos.Length)];
        BinaryPrimitives.WriteUInt32BigEndian(b, (uint)n.Length);
        n.CopyTo(b, 4);
        BinaryPrimitives.WriteUInt16BigEndian(b.AsSpan(4 + n.Length), (ushort)infos.Length);
        for (var i = 0; i < infos.Length; i++)
        {
            BinaryPrimitives.WriteUInt16BigEndian(b.AsSpan(6 + n.Length + (2 * i)), infos[i]);
        }
        return b;
    }

    public static byte[] MetaContextData(string export, params string[] queries)
    {
        var ms = new MemoryStream();
        var n = Encoding.UTF8.GetBytes(export);
        ms.Write(U32(n.Length));
        ms.Write(n);
        ms.Write(U32(queries.Length));
        foreach (var q in queries)
        {
            var qb = Encoding.UTF8.GetBytes(q);
            ms.Write(U32(qb.Length));
            ms.Write(qb);
        }
        return ms.ToArray();
    }

    private static byte[] U32(int v)
    {
        var b = new byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(b, (uint)v);
        return b;
    }

    public async Task StartTlsAsync(CancellationToken ct = default)
    {
        var ssl = new SslStream(_stream, false, (_, _, _, _) => true);
        await ssl.AuthenticateAsClientAsync(new SslClientAuthenticationOptions { TargetHost = "localhost" }, ct);
        _stream = ssl;
    }

    public Task SendRequestAsync(ushort flags, ushort type, ulong cookie, ulong offset, uint length, byte[]? payload = null, CancellationToken ct = default, uint magic = RequestMagic)
    {
        var b = new byte[28 + (payload?.Length ?? 0)];
        BinaryPrimitives.WriteUInt32BigEndian(b, magic);
        BinaryPrimitives.WriteUInt16BigEndian(b.AsSpan(4), flags);
        BinaryPrimitives.WriteUInt16BigEndian(b.AsSpan(6), type);
        BinaryPrimitives.WriteUInt64BigEndian(b.AsSpan(8), cookie);
        BinaryPrimitives.WriteUInt64BigEndian(b.AsSpan(16), offset);
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(24), length);
        payload?.CopyTo(b, 28);
        return _stream.WriteAsync(b, ct).AsTask();
    }

    /// <summary>A simple reply; <paramref name="dataLength"/> bytes of data follow a successful read.</summary>
    public async Task<(uint Error, ulong Cookie, byte[] Data)> ReadSimpleReplyAsync(int dataLength = 0, CancellationToken ct = default)
    {
        var h = await ReadAsync(16, ct);
        Assert.That(BinaryPrimitives.ReadUInt32BigEndian(h), Is.EqualTo(SimpleReplyMagic), "simple reply magic");
        var error = BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(4));
        var data = error == 0 && dataLength > 0 ? await ReadAsync(dataLength, ct) : [];
        return (error, BinaryPrimitives.ReadUInt64BigEndian(h.AsSpan(8)), data);
    }

    /// <summary>Any reply: a simple reply (Type = 0xFFFF) or one structured chunk.</summary>
    public async Task<Reply> ReadReplyAsync(CancellationToken ct = default)
    {
        var m = await ReadAsync(4, ct);
        var magic = BinaryPrimitives.ReadUInt32BigEndian(m);
        if (magic == SimpleReplyMagic)
        {
            var rest = await ReadAsync(12, ct);
            return new Reply(true, 0, 0xFFFF, BinaryPrimitives.ReadUInt64BigEndian(rest.AsSpan(4)), BinaryPrimitives.ReadUInt32BigEndian(rest), []);
        }
        Assert.That(magic, Is.EqualTo(StructuredReplyMagic), "reply magic");
        var h = await ReadAsync(16, ct);
        var len = BinaryPrimitives.ReadUInt32BigEndian(h.AsSpan(12));
        Assert.That(len, Is.LessThanOrEqualTo(64u << 20));
        var payload = await ReadAsync((int)len, ct);
        var type = BinaryPrimitives.ReadUInt16BigEndian(h.AsSpan(2));
        var error = (type & 0x8000) != 0 ? BinaryPrimitives.ReadUInt32BigEndian(payload) : 0;
        return new Reply(false, BinaryPrimitives.ReadUInt16BigEndian(h), type, BinaryPrimitives.ReadUInt64BigEndian(h.AsSpan(4)), error, payload);
    }

    public readonly record struct Reply(bool Simple, ushort Flags, ushort Type, ulong Cookie, uint Error, byte[] Payload)
    {
        public bool Done => Simple || (Flags & 1) != 0;
    }

    public async Task<byte[]> ReadAsync(int n, CancellationToken ct = default)
    {
        var b = new byte[n];
        await _stream.ReadExactlyAsync(b, ct);
        return b;
    }

    /// <summary>True when the server has closed the connection (reads hit end of stream or a reset).</summary>
    public async Task<bool> IsClosedAsync(TimeSpan within)
    {
        using var cts = new CancellationTokenSource(within);
        try
        {
            var b = new byte[4096];
            while (true)
            {
                if (await _stream.ReadAsync(b, cts.Token) == 0)
                {
                    return true;
                }
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

    public async ValueTask DisposeAsync() => await _stream.DisposeAsync();
}
