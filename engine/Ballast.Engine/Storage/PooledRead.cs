using System.Threading.Tasks.Sources;

namespace Ballast.Engine.Storage;

/// <summary>
/// One pooled read as a ValueTask source, shared by the read paths (blocking threads, io_uring):
/// the caller's continuation runs inline when it asked for that, and the object goes back to its
/// owner's pool once the caller has taken the result.
/// </summary>
internal abstract class PooledRead : IValueTaskSource
{
    private ManualResetValueTaskSourceCore<bool> _core;

    protected long Offset { get; private set; }
    protected Memory<byte> Buffer { get; private set; }

    public short Version => _core.Version;

    protected void Prepare(long offset, Memory<byte> buffer, bool completeInline)
    {
        _core.Reset();
        _core.RunContinuationsAsynchronously = !completeInline;
        Offset = offset;
        Buffer = buffer;
    }

    protected void Succeed() => _core.SetResult(true);

    protected void Fail(Exception e) => _core.SetException(e);

    /// <summary>Hands the object back to its pool (the result has been taken).</summary>
    protected abstract void Recycle();

    public void GetResult(short token)
    {
        try
        {
            _core.GetResult(token);
        }
        finally
        {
            Buffer = default;
            Recycle();
        }
    }

    public ValueTaskSourceStatus GetStatus(short token) => _core.GetStatus(token);

    public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags)
        => _core.OnCompleted(continuation, state, token, flags);
}
