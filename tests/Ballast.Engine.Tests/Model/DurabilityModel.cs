namespace Ballast.Engine.Tests.Model;

/// <summary>
/// What a volume may legally hold after a crash. Every 4 KiB block keeps the sequence of values
/// issued to it (requests to one block never overlap in time, so issue order is the order) and
/// the index of the newest value known durable: acknowledged before a completed flush, or
/// written with FUA. After recovery a block must hold one of its values from that index on:
/// never an older one, never bytes nobody wrote.
/// </summary>
public sealed class DurabilityModel
{
    private readonly Dictionary<(string Volume, long Block), Block> _blocks = [];
    private readonly object _lock = new();
    private long _clock;

    private sealed class Block
    {
        public readonly List<byte[]?> Values = [null];
        public readonly List<long> Acked = [0];
        public int Durable;
        // A write to it failed: it may hold that value or the one before (a write refused for
        // space may still have written its head), so the newest value is no base to merge onto.
        public bool Uncertain;
    }

    /// <summary>A request to the block failed: what it holds now is known only by reading it.</summary>
    public void MarkUncertain(string volume, long block)
    {
        lock (_lock)
        {
            Get(volume, block).Uncertain = true;
        }
    }

    public bool IsUncertain(string volume, long block)
    {
        lock (_lock)
        {
            return _blocks.TryGetValue((volume, block), out var b) && b.Uncertain;
        }
    }

    public List<(string Volume, long Block)> Keys
    {
        get
        {
            lock (_lock)
            {
                return [.. _blocks.Keys];
            }
        }
    }

    public byte[] Current(string volume, long block)
    {
        lock (_lock)
        {
            var v = Get(volume, block).Values[^1];
            return v == null ? new byte[4096] : (byte[])v.Clone();
        }
    }

    private Block Get(string volume, long block)
    {
        if (!_blocks.TryGetValue((volume, block), out var b))
        {
            b = new Block();
            _blocks[(volume, block)] = b;
        }
        return b;
    }

    /// <summary>Records a value issued to a block; returns a token for <see cref="Acknowledge"/>.</summary>
    public int Issue(string volume, long block, byte[]? value)
    {
        lock (_lock)
        {
            var b = Get(volume, block);
            b.Values.Add(value == null || !value.AsSpan().ContainsAnyExcept((byte)0) ? null : value);
            b.Acked.Add(long.MaxValue);
            return b.Values.Count - 1;
        }
    }

    public void Acknowledge(string volume, long block, int token, bool fua)
    {
        lock (_lock)
        {
            var b = Get(volume, block);
            b.Acked[token] = ++_clock;
            b.Uncertain = false;
            if (fua)
            {
                b.Durable = Math.Max(b.Durable, token);
            }
        }
    }

    public long FlushIssued()
    {
        lock (_lock)
        {
            return ++_clock;
        }
    }

    /// <summary>A flush issued at <paramref name="issuedAt"/> completed: what was acknowledged before it is durable, on every volume.</summary>
    public void FlushCompleted(long issuedAt)
    {
        lock (_lock)
        {
            foreach (var b in _blocks.Values)
            {
                for (var i = b.Values.Count - 1; i > b.Durable; i--)
                {
                    if (b.Acked[i] < issuedAt)
                    {
                        b.Durable = i;
                        break;
                    }
                }
            }
        }
    }

    public string Describe(string volume, long block)
    {
        lock (_lock)
        {
            if (!_blocks.TryGetValue((volume, block), out var b)) return "none";
            return string.Join(", ", b.Values.Select((v, i) => $"[{i}] {(v == null ? "zero" : Convert.ToHexString(v.AsSpan(0, 16)) + " crc " + Crc32C.Compute(v).ToString("x8"))} acked {b.Acked[i]}")) + $" durable {b.Durable}";
        }
    }

    /// <summary>Null when <paramref name="actual"/> is allowed, else a description of the violation.</summary>
    public string? Check(string volume, long block, ReadOnlySpan<byte> actual)
    {
        lock (_lock)
        {
            if (!_blocks.TryGetValue((volume, block), out var b))
            {
                return actual.ContainsAnyExcept((byte)0) ? $"{volume} block {block} was never written but holds data" : null;
            }
            var zero = !actual.ContainsAnyExcept((byte)0);
            for (var i = b.Durable; i < b.Values.Count; i++)
            {
                var v = b.Values[i];
                if (v == null ? zero : actual.SequenceEqual(v))
                {
                    return null;
                }
            }
            for (var i = 0; i < b.Durable; i++)
            {
                var v = b.Values[i];
                if (v == null ? zero : actual.SequenceEqual(v))
                {
                    return $"{volume} block {block} went back to value {i} of {b.Values.Count - 1}, but value {b.Durable} was durable";
                }
            }
            return $"{volume} block {block} holds bytes never written to it (durable value {b.Durable} of {b.Values.Count - 1})";
        }
    }
}
