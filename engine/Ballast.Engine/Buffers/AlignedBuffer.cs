using System.Buffers;
using System.Runtime.InteropServices;

namespace Ballast.Engine.Buffers;

/// <summary>
/// Native memory aligned for O_DIRECT (4096 bytes), exposed as <see cref="Memory{T}"/>.
/// Pinning is free: the memory never moves.
/// </summary>
public sealed unsafe class AlignedBuffer : MemoryManager<byte>
{
    public const int Alignment = 4096;
    private byte* _ptr;

    public AlignedBuffer(int length)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(length);
        Length = length;
        _ptr = (byte*)NativeMemory.AlignedAlloc((nuint)length, Alignment);
        NativeMemory.Clear(_ptr, (nuint)length);
    }

    public int Length { get; }

    /// <summary>
    /// True when <paramref name="memory"/> lies in an aligned buffer, starts on an alignment
    /// boundary and is whole alignment units long: O_DIRECT can take it as it is.
    /// </summary>
    public static bool IsAligned(ReadOnlyMemory<byte> memory) =>
        MemoryMarshal.TryGetMemoryManager(memory, out AlignedBuffer? _, out var start, out var length)
        && ((start | length) & (Alignment - 1)) == 0;
    public byte* Pointer => _ptr;
    public Span<byte> Span => new(_ptr, Length);

    public override Span<byte> GetSpan() => new(_ptr, Length);
    public override MemoryHandle Pin(int elementIndex = 0) => new(_ptr + elementIndex);
    public override void Unpin() { }

    protected override void Dispose(bool disposing)
    {
        if (_ptr != null)
        {
            NativeMemory.AlignedFree(_ptr);
            _ptr = null;
        }
    }
}
