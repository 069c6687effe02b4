using System.Buffers.Binary;
using System.Text;
using Ballast.Nbd.Protocol;

namespace Ballast.Nbd.Handshake;

/// <summary>
/// Writes fixed-newstyle option replies: magic, option, reply type, length, data. Replies are
/// small and rare, so they are built in a reused buffer and written at once.
/// </summary>
internal sealed class OptionWriter(Func<Stream> stream)
{
    private byte[] _buffer = new byte[1024];

    public Task AckAsync(NbdOption option, CancellationToken ct) => ReplyAsync(option, NbdReplyType.Ack, ReadOnlyMemory<byte>.Empty, ct);

    public Task ErrorAsync(NbdOption option, NbdReplyType error, string message, CancellationToken ct)
    {
        // Error messages are strings too: at most 4096 bytes.
        var bytes = Encoding.UTF8.GetBytes(message.Length > 1024 ? message[..1024] : message);
        return ReplyAsync(option, error, bytes, ct);
    }

    public async Task ReplyAsync(NbdOption option, NbdReplyType type, ReadOnlyMemory<byte> data, CancellationToken ct)
    {
        var total = 20 + data.Length;
        if (_buffer.Length < total)
        {
            _buffer = new byte[total];
        }
        var b = _buffer.AsSpan();
        BinaryPrimitives.WriteUInt64BigEndian(b, NbdMagic.OptionReply);
        BinaryPrimitives.WriteUInt32BigEndian(b[8..], (uint)option);
        BinaryPrimitives.WriteUInt32BigEndian(b[12..], (uint)type);
        BinaryPrimitives.WriteUInt32BigEndian(b[16..], (uint)data.Length);
        data.Span.CopyTo(b[20..]);
        await stream().WriteAsync(_buffer.AsMemory(0, total), ct).ConfigureAwait(false);
    }

    /// <summary>NBD_REP_SERVER: 32-bit name length, name, then a human-readable description.</summary>
    public Task ServerAsync(string name, string description, CancellationToken ct)
    {
        var n = Encoding.UTF8.GetBytes(name);
        var d = Encoding.UTF8.GetBytes(description);
        var data = new byte[4 + n.Length + d.Length];
        BinaryPrimitives.WriteUInt32BigEndian(data, (uint)n.Length);
        n.CopyTo(data, 4);
        d.CopyTo(data, 4 + n.Length);
        return ReplyAsync(NbdOption.List, NbdReplyType.Server, data, ct);
    }

    /// <summary>NBD_REP_INFO carrying NBD_INFO_EXPORT: size and transmission flags.</summary>
    public Task InfoExportAsync(NbdOption option, long size, TransmissionFlags flags, CancellationToken ct)
    {
        var data = new byte[12];
        BinaryPrimitives.WriteUInt16BigEndian(data, (ushort)NbdInfo.Export);
        BinaryPrimitives.WriteUInt64BigEndian(data.AsSpan(2), (ulong)size);
        BinaryPrimitives.WriteUInt16BigEndian(data.AsSpan(10), (ushort)flags);
        return ReplyAsync(option, NbdReplyType.Info, data, ct);
    }

    /// <summary>NBD_REP_INFO carrying NBD_INFO_NAME or NBD_INFO_DESCRIPTION.</summary>
    public Task InfoStringAsync(NbdOption option, NbdInfo info, string value, CancellationToken ct)
    {
        var s = Encoding.UTF8.GetBytes(value);
        var data = new byte[2 + s.Length];
        BinaryPrimitives.WriteUInt16BigEndian(data, (ushort)info);
        s.CopyTo(data, 2);
        return ReplyAsync(option, NbdReplyType.Info, data, ct);
    }

    /// <summary>NBD_REP_INFO carrying NBD_INFO_BLOCK_SIZE: minimum, preferred, maximum.</summary>
    public Task InfoBlockSizeAsync(NbdOption option, uint minimum, uint preferred, uint maximum, CancellationToken ct)
    {
        var data = new byte[14];
        BinaryPrimitives.WriteUInt16BigEndian(data, (ushort)NbdInfo.BlockSize);
        BinaryPrimitives.WriteUInt32BigEndian(data.AsSpan(2), minimum);
        BinaryPrimitives.WriteUInt32BigEndian(data.AsSpan(6), preferred);
        BinaryPrimitives.WriteUInt32BigEndian(data.AsSpan(10), maximum);
        return ReplyAsync(option, NbdReplyType.Info, data, ct);
    }

    /// <summary>NBD_REP_META_CONTEXT: context id and name.</summary>
    public Task MetaContextAsync(NbdOption option, uint id, string name, CancellationToken ct)
    {
        var s = Encoding.UTF8.GetBytes(name);
        var data = new byte[4 + s.Length];
        BinaryPrimitives.WriteUInt32BigEndian(data, id);
        s.CopyTo(data, 4);
        return ReplyAsync(option, NbdReplyType.MetaContext, data, ct);
    }
}
