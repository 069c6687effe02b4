using System.Buffers.Binary;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using Ballast.Engine.Volumes;
using Ballast.Nbd.Protocol;
using Microsoft.Extensions.Logging;

namespace Ballast.Nbd.Handshake;

/// <summary>
/// The fixed newstyle handshake and option haggling (doc/proto.md "Handshake"), one method per
/// option. Reads exactly what each message says and no more, so nothing sent after
/// NBD_OPT_STARTTLS can be taken for data that arrived over TLS. Returns the negotiated export,
/// or null when the session ends here (abort, a refused export, a protocol violation).
/// </summary>
internal sealed class Negotiation
{
    /// <summary>The only metadata context: base:allocation, always context id 1.</summary>
    public const uint AllocationContextId = 1;
    public const string AllocationContext = "base:allocation";

    private readonly NbdServerOptions _options;
    private readonly IVolumeDirectory _volumes;
    private readonly Socket? _socket;
    private readonly ILogger _log;
    private bool _unknownLogged;
    private readonly string _peer;
    private readonly OptionWriter _writer;
    private readonly byte[] _header = new byte[16];
    private Stream _stream;
    private bool _fixedNewstyle;
    private bool _noZeroes;
    private bool _tls;
    private bool _structured;
    // Export for which base:allocation was selected by the last NBD_OPT_SET_META_CONTEXT, if any.
    private string? _metaExport;

    public Negotiation(Stream stream, Socket? socket, NbdServerOptions options, IVolumeDirectory volumes, ILogger log, string peer)
    {
        _stream = stream;
        _socket = socket;
        _options = options;
        _volumes = volumes;
        _log = log;
        _peer = peer;
        _writer = new OptionWriter(() => _stream);
    }

    /// <summary>The stream the session continues on (an SslStream once TLS is up).</summary>
    public Stream Stream => _stream;

    public async Task<NegotiatedExport?> RunAsync(CancellationToken ct)
    {
        var hello = new byte[18];
        BinaryPrimitives.WriteUInt64BigEndian(hello, NbdMagic.InitPasswd);
        BinaryPrimitives.WriteUInt64BigEndian(hello.AsSpan(8), NbdMagic.IHaveOpt);
        BinaryPrimitives.WriteUInt16BigEndian(hello.AsSpan(16), (ushort)(HandshakeFlags.FixedNewstyle | HandshakeFlags.NoZeroes));
        await _stream.WriteAsync(hello, ct).ConfigureAwait(false);

        await _stream.ReadExactlyAsync(_header.AsMemory(0, 4), ct).ConfigureAwait(false);
        var clientFlags = (ClientFlags)BinaryPrimitives.ReadUInt32BigEndian(_header);
        if ((clientFlags & ~(ClientFlags.FixedNewstyle | ClientFlags.NoZeroes)) != 0)
        {
            // "the server MUST drop the TCP connection if the client sets an unknown flag"
            return Refuse($"unknown client flags 0x{(uint)clientFlags:x}");
        }
        _fixedNewstyle = (clientFlags & ClientFlags.FixedNewstyle) != 0;
        _noZeroes = (clientFlags & ClientFlags.NoZeroes) != 0;

        while (true)
        {
            await _stream.ReadExactlyAsync(_header.AsMemory(0, 16), ct).ConfigureAwait(false);
            if (BinaryPrimitives.ReadUInt64BigEndian(_header) != NbdMagic.IHaveOpt)
            {
                return Refuse("an option without the IHAVEOPT magic");
            }
            var option = (NbdOption)BinaryPrimitives.ReadUInt32BigEndian(_header.AsSpan(8));
            var length = BinaryPrimitives.ReadUInt32BigEndian(_header.AsSpan(12));
            if (length > (uint)_options.MaxOptionLength)
            {
                if (option == NbdOption.ExportName || length > 1 << 20 || !_fixedNewstyle)
                {
                    return Refuse($"option {option} with {length} bytes of data (limit {_options.MaxOptionLength})");
                }
                await SkipAsync(length, ct).ConfigureAwait(false);
                await _writer.ErrorAsync(option, NbdReplyType.ErrTooBig, $"option data of {length} bytes is more than the server accepts ({_options.MaxOptionLength})", ct).ConfigureAwait(false);
                continue;
            }
            var data = new byte[length];
            await _stream.ReadExactlyAsync(data, ct).ConfigureAwait(false);

            if (!_fixedNewstyle && option != NbdOption.ExportName)
            {
                // Without fixed newstyle there is no way to answer anything else.
                return Refuse($"option {option} from a client that did not negotiate fixed newstyle");
            }
            if (_options.Tls == NbdTlsMode.Require && !_tls && option is not (NbdOption.StartTls or NbdOption.Abort))
            {
                if (option == NbdOption.ExportName)
                {
                    // FORCEDTLS: "as this request cannot error, it MUST terminate the session".
                    return Refuse("NBD_OPT_EXPORT_NAME before TLS on a server that requires TLS");
                }
                await _writer.ErrorAsync(option, NbdReplyType.ErrTlsReqd, "this server requires TLS: send NBD_OPT_STARTTLS first", ct).ConfigureAwait(false);
                continue;
            }

            switch (option)
            {
                case NbdOption.ExportName:
                    return await ExportNameAsync(data, ct).ConfigureAwait(false);
                case NbdOption.Abort:
                    await AbortAsync(ct).ConfigureAwait(false);
                    return null;
                case NbdOption.List:
                    await ListAsync(data, ct).ConfigureAwait(false);
                    break;
                case NbdOption.StartTls:
                    if (!await StartTlsAsync(data, ct).ConfigureAwait(false))
                    {
                        return null;
                    }
                    break;
                case NbdOption.Info:
                case NbdOption.Go:
                    var export = await InfoOrGoAsync(option, data, ct).ConfigureAwait(false);
                    if (export != null)
                    {
                        return export;
                    }
                    break;
                case NbdOption.StructuredReply:
                    await StructuredReplyAsync(data, ct).ConfigureAwait(false);
                    break;
                case NbdOption.ListMetaContext:
                case NbdOption.SetMetaContext:
                    await MetaContextAsync(option, data, ct).ConfigureAwait(false);
                    break;
                default:
                    await _writer.ErrorAsync(option, NbdReplyType.ErrUnsup, $"option {(uint)option} is not supported", ct).ConfigureAwait(false);
                    break;
            }
        }
    }

    private NegotiatedExport? Refuse(string why)
    {
        Log.HandshakeRefused(_log, _peer, why);
        return null;
    }

    private async Task SkipAsync(uint length, CancellationToken ct)
    {
        var scratch = new byte[Math.Min(length, 64 * 1024)];
        while (length > 0)
        {
            var n = (int)Math.Min(length, (uint)scratch.Length);
            await _stream.ReadExactlyAsync(scratch.AsMemory(0, n), ct).ConfigureAwait(false);
            length -= (uint)n;
        }
    }

    /// <summary>The volume for an export name; "" means the configured default export.</summary>
    private IBlockVolume? Find(string name)
    {
        if (name.Length == 0)
        {
            return _options.DefaultExport is { } d ? _volumes.Find(d) : null;
        }
        return _volumes.Find(name);
    }

    private string CanonicalName(string name) => name.Length == 0 && _options.DefaultExport is { } d ? d : name;

    private TransmissionFlags FlagsFor(IBlockVolume v)
    {
        var f = TransmissionFlags.HasFlags | TransmissionFlags.SendFlush | TransmissionFlags.SendFua | TransmissionFlags.SendCache;
        if ((v.Features & VolumeFeatures.MultiConnection) != 0)
        {
            f |= TransmissionFlags.CanMultiConn;
        }
        if ((v.Features & VolumeFeatures.ReadOnly) != 0)
        {
            f |= TransmissionFlags.ReadOnly;
        }
        else
        {
            if ((v.Features & VolumeFeatures.Trim) != 0)
            {
                f |= TransmissionFlags.SendTrim;
            }
            if ((v.Features & VolumeFeatures.WriteZeroes) != 0)
            {
                f |= TransmissionFlags.SendWriteZeroes | TransmissionFlags.SendFastZero;
            }
        }
        if (_structured)
        {
            // "MUST leave this flag clear if structured replies have not been negotiated"
            f |= TransmissionFlags.SendDf;
        }
        return f;
    }

    private NegotiatedExport Negotiated(string name, IBlockVolume v) => new(
        CanonicalName(name), v, _stream, FlagsFor(v), _structured,
        _structured && _metaExport == name ? AllocationContextId : 0, _tls);

    private async Task<NegotiatedExport?> ExportNameAsync(byte[] data, CancellationToken ct)
    {
        if (!OptionData.TryDecode(data, out var name, out var problem))
        {
            return Refuse($"NBD_OPT_EXPORT_NAME: {problem}");
        }
        var v = Find(name);
        if (v == null)
        {
            // This option cannot return an error: the only answer is to close.
            return Refuse($"NBD_OPT_EXPORT_NAME for unknown export \"{name}\"");
        }
        var reply = new byte[_noZeroes ? 10 : 134];
        BinaryPrimitives.WriteUInt64BigEndian(reply, (ulong)v.Size);
        BinaryPrimitives.WriteUInt16BigEndian(reply.AsSpan(8), (ushort)FlagsFor(v));
        await _stream.WriteAsync(reply, ct).ConfigureAwait(false);
        return Negotiated(name, v);
    }

    private async Task AbortAsync(CancellationToken ct)
    {
        try
        {
            await _writer.AckAsync(NbdOption.Abort, ct).ConfigureAwait(false);
        }
        catch (IOException)
        {
            // "the server SHOULD gracefully handle the client ... closing the connection without waiting for a reply"
        }
    }

    private async Task ListAsync(byte[] data, CancellationToken ct)
    {
        if (data.Length != 0)
        {
            await _writer.ErrorAsync(NbdOption.List, NbdReplyType.ErrInvalid, "NBD_OPT_LIST carries no data", ct).ConfigureAwait(false);
            return;
        }
        foreach (var e in _volumes.List())
        {
            await _writer.ServerAsync(e.Name, e.Description, ct).ConfigureAwait(false);
        }
        await _writer.AckAsync(NbdOption.List, ct).ConfigureAwait(false);
    }

    private async Task<bool> StartTlsAsync(byte[] data, CancellationToken ct)
    {
        if (data.Length != 0)
        {
            await _writer.ErrorAsync(NbdOption.StartTls, NbdReplyType.ErrInvalid, "NBD_OPT_STARTTLS carries no data", ct).ConfigureAwait(false);
            return true;
        }
        if (_tls)
        {
            await _writer.ErrorAsync(NbdOption.StartTls, NbdReplyType.ErrInvalid, "TLS is already running", ct).ConfigureAwait(false);
            return true;
        }
        if (_options.Tls == NbdTlsMode.Off)
        {
            await _writer.ErrorAsync(NbdOption.StartTls, NbdReplyType.ErrPolicy, "TLS is not enabled on this server", ct).ConfigureAwait(false);
            return true;
        }
        if (_socket is { Available: > 0 })
        {
            // The client sent more before our answer: bytes it meant to go over TLS would be
            // read in plain text (CVE-2011-0411 style injection). Refuse the session.
            Refuse("data queued behind NBD_OPT_STARTTLS before the server answered");
            return false;
        }
        await _writer.AckAsync(NbdOption.StartTls, ct).ConfigureAwait(false);
        var ssl = new SslStream(_stream, leaveInnerStreamOpen: false);
        try
        {
            await ssl.AuthenticateAsServerAsync(new SslServerAuthenticationOptions
            {
                ServerCertificate = _options.TlsCertificate,
                EnabledSslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13,
                ClientCertificateRequired = false,
            }, ct).ConfigureAwait(false);
        }
        catch (Exception e) when (e is AuthenticationException or IOException)
        {
            await ssl.DisposeAsync().ConfigureAwait(false);
            Refuse($"TLS handshake failed: {e.Message}");
            return false;
        }
        _stream = ssl;
        _tls = true;
        // "the server MUST NOT preserve any negotiation state ... issued before this command"
        _structured = false;
        _metaExport = null;
        return true;
    }

    private async Task<NegotiatedExport?> InfoOrGoAsync(NbdOption option, byte[] data, CancellationToken ct)
    {
        var d = new OptionData(data);
        string? problem = null;
        if (!d.TryU32(out var nameLength) || !d.TryString(nameLength, out var name, out problem) || !d.TryU16(out var count))
        {
            await _writer.ErrorAsync(option, NbdReplyType.ErrInvalid, problem ?? "option data too short", ct).ConfigureAwait(false);
            return null;
        }
        if (d.Remaining != 2 * count)
        {
            await _writer.ErrorAsync(option, NbdReplyType.ErrInvalid, $"{count} information requests need {2 * count} bytes, the option has {d.Remaining}", ct).ConfigureAwait(false);
            return null;
        }
        bool wantName = false, wantDescription = false, wantBlockSize = false;
        for (var i = 0; i < count; i++)
        {
            d.TryU16(out var info);
            switch ((NbdInfo)info)
            {
                case NbdInfo.Name: wantName = true; break;
                case NbdInfo.Description: wantDescription = true; break;
                case NbdInfo.BlockSize: wantBlockSize = true; break;
            }
        }
        var v = Find(name);
        if (v == null)
        {
            var why = name.Length == 0 ? "there is no default export; name a volume (NBD_OPT_LIST shows them)" : $"export \"{name}\" not found";
            if (!_unknownLogged)
            {
                // Once per connection: the client may try other names, and a misconfigured one
                // should show in the log without a line per option.
                _unknownLogged = true;
                Log.UnknownExport(_log, _peer, option == NbdOption.Go ? "NBD_OPT_GO" : "NBD_OPT_INFO", why);
            }
            await _writer.ErrorAsync(option, NbdReplyType.ErrUnknown, why, ct).ConfigureAwait(false);
            return null;
        }
        await _writer.InfoExportAsync(option, v.Size, FlagsFor(v), ct).ConfigureAwait(false);
        if (wantName)
        {
            await _writer.InfoStringAsync(option, NbdInfo.Name, CanonicalName(name), ct).ConfigureAwait(false);
        }
        if (wantDescription)
        {
            await _writer.InfoStringAsync(option, NbdInfo.Description, DescriptionOf(CanonicalName(name)), ct).ConfigureAwait(false);
        }
        if (wantBlockSize)
        {
            // Any alignment works (the engine merges partial blocks); 4 KiB avoids that work.
            await _writer.InfoBlockSizeAsync(option, 1, (uint)Math.Max(4096, v.LogicalBlockSize), (uint)_options.MaxPayload, ct).ConfigureAwait(false);
        }
        await _writer.AckAsync(option, ct).ConfigureAwait(false);
        return option == NbdOption.Go ? Negotiated(name, v) : null;
    }

    private string DescriptionOf(string name)
    {
        foreach (var e in _volumes.List())
        {
            if (e.Name == name)
            {
                return e.Description;
            }
        }
        return $"Ballast volume {name}";
    }

    private async Task StructuredReplyAsync(byte[] data, CancellationToken ct)
    {
        if (data.Length != 0)
        {
            await _writer.ErrorAsync(NbdOption.StructuredReply, NbdReplyType.ErrInvalid, "NBD_OPT_STRUCTURED_REPLY carries no data", ct).ConfigureAwait(false);
            return;
        }
        if (_structured)
        {
            await _writer.ErrorAsync(NbdOption.StructuredReply, NbdReplyType.ErrInvalid, "structured replies are already negotiated", ct).ConfigureAwait(false);
            return;
        }
        _structured = true;
        await _writer.AckAsync(NbdOption.StructuredReply, ct).ConfigureAwait(false);
    }

    private async Task MetaContextAsync(NbdOption option, byte[] data, CancellationToken ct)
    {
        var set = option == NbdOption.SetMetaContext;
        if (set)
        {
            // "Issuing this command replaces all previously-set metadata contexts (including when this command fails)"
            _metaExport = null;
        }
        if (!_structured)
        {
            await _writer.ErrorAsync(option, NbdReplyType.ErrInvalid, "negotiate NBD_OPT_STRUCTURED_REPLY first", ct).ConfigureAwait(false);
            return;
        }
        var d = new OptionData(data);
        string? problem = null;
        if (!d.TryU32(out var nameLength) || !d.TryString(nameLength, out var name, out problem) || !d.TryU32(out var count))
        {
            await _writer.ErrorAsync(option, NbdReplyType.ErrInvalid, problem ?? "option data too short", ct).ConfigureAwait(false);
            return;
        }
        if (count > 128)
        {
            await _writer.ErrorAsync(option, NbdReplyType.ErrTooBig, $"{count} queries are more than the server takes (128)", ct).ConfigureAwait(false);
            return;
        }
        var queries = new List<string>((int)count);
        for (var i = 0; i < count; i++)
        {
            if (!d.TryU32(out var qLength) || !d.TryString(qLength, out var q, out problem))
            {
                await _writer.ErrorAsync(option, NbdReplyType.ErrInvalid, problem ?? "query length runs past the option", ct).ConfigureAwait(false);
                return;
            }
            queries.Add(q);
        }
        if (d.Remaining != 0)
        {
            await _writer.ErrorAsync(option, NbdReplyType.ErrInvalid, $"{d.Remaining} bytes after the last query", ct).ConfigureAwait(false);
            return;
        }
        if (Find(name) == null)
        {
            await _writer.ErrorAsync(option, NbdReplyType.ErrUnknown, $"export \"{name}\" not found", ct).ConfigureAwait(false);
            return;
        }
        bool match;
        if (set)
        {
            // "base:" selects nothing during SET; unknown namespaces and leaves are ignored.
            match = queries.Contains(AllocationContext);
        }
        else
        {
            match = queries.Count == 0 || queries.Exists(q => q is "base:" or AllocationContext);
        }
        if (match)
        {
            await _writer.MetaContextAsync(option, set ? AllocationContextId : 0, AllocationContext, ct).ConfigureAwait(false);
            if (set)
            {
                _metaExport = name;
            }
        }
        await _writer.AckAsync(option, ct).ConfigureAwait(false);
    }
}
