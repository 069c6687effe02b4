using System.Runtime.CompilerServices;
using System.Threading.Tasks.Sources;

namespace Ballast.Engine.Async;

/// <summary>
/// Async method builder for per-I/O <see cref="ValueTask"/> methods: the state machine of a method
/// that suspends lives in a box taken from a per-method pool and returned when the caller has read
/// the result. The runtime's PoolingAsyncValueTaskMethodBuilder caches one box per thread and per
/// core, which misses almost always with 32 requests in flight completing on other threads (about
/// 200 bytes allocated per suspended method per I/O); this pool holds up to 512 boxes per method.
/// Use as <c>[AsyncMethodBuilder(typeof(PooledValueTaskBuilder))]</c>; callers await the ValueTask once.
/// </summary>
public struct PooledValueTaskBuilder
{
    private IPooledBox? _box;
    private Exception? _syncException;

    public static PooledValueTaskBuilder Create() => default;

    public readonly ValueTask Task =>
        _box != null ? new ValueTask(_box, _box.Version)
        : _syncException != null ? ValueTask.FromException(_syncException)
        : default;

    // The runtime's Start only restores the caller's execution and synchronization contexts.
    public readonly void Start<TStateMachine>(ref TStateMachine stateMachine)
        where TStateMachine : IAsyncStateMachine => default(AsyncValueTaskMethodBuilder).Start(ref stateMachine);

    public readonly void SetStateMachine(IAsyncStateMachine stateMachine)
    {
    }

    public void SetResult() => _box?.SetResult();

    public void SetException(Exception exception)
    {
        if (_box != null)
        {
            _box.SetException(exception);
        }
        else
        {
            _syncException = exception;
        }
    }

    public void AwaitOnCompleted<TAwaiter, TStateMachine>(ref TAwaiter awaiter, ref TStateMachine stateMachine)
        where TAwaiter : INotifyCompletion
        where TStateMachine : IAsyncStateMachine => awaiter.OnCompleted(BoxFor(ref stateMachine).MoveNextAction);

    public void AwaitUnsafeOnCompleted<TAwaiter, TStateMachine>(ref TAwaiter awaiter, ref TStateMachine stateMachine)
        where TAwaiter : ICriticalNotifyCompletion
        where TStateMachine : IAsyncStateMachine => awaiter.UnsafeOnCompleted(BoxFor(ref stateMachine).MoveNextAction);

    private StateMachineBox<TStateMachine> BoxFor<TStateMachine>(ref TStateMachine stateMachine)
        where TStateMachine : IAsyncStateMachine
    {
        if (_box is StateMachineBox<TStateMachine> existing)
        {
            return existing;
        }
        var box = StateMachineBox<TStateMachine>.Rent();
        // Set before the copy: the builder lives inside the state machine, so the boxed copy has it too.
        _box = box;
        box.StateMachine = stateMachine;
        box.Context = ExecutionContext.Capture();
        return box;
    }
}

internal interface IPooledBox : IValueTaskSource
{
    short Version { get; }

    void SetResult();

    void SetException(Exception exception);
}

internal sealed class StateMachineBox<TStateMachine> : IPooledBox
    where TStateMachine : IAsyncStateMachine
{
    private const int PoolSize = 512;
    private static readonly StateMachineBox<TStateMachine>?[] Pool = new StateMachineBox<TStateMachine>?[PoolSize];
    private static readonly Lock PoolLock = new();
    private static readonly ContextCallback RunInContext = s => ((StateMachineBox<TStateMachine>)s!).StateMachine.MoveNext();
    private static int _pooled;

    private ManualResetValueTaskSourceCore<bool> _core;

    private StateMachineBox() => MoveNextAction = MoveNext;

    public TStateMachine StateMachine = default!;
    public ExecutionContext? Context;

    public Action MoveNextAction { get; }

    public short Version => _core.Version;

    public static StateMachineBox<TStateMachine> Rent()
    {
        lock (PoolLock)
        {
            if (_pooled > 0)
            {
                var box = Pool[--_pooled]!;
                Pool[_pooled] = null;
                return box;
            }
        }
        return new StateMachineBox<TStateMachine>();
    }

    private void Return()
    {
        StateMachine = default!;
        Context = null;
        _core.Reset();
        lock (PoolLock)
        {
            if (_pooled < PoolSize)
            {
                Pool[_pooled++] = this;
            }
        }
    }

    private void MoveNext()
    {
        if (Context == null)
        {
            StateMachine.MoveNext();
        }
        else
        {
            ExecutionContext.Run(Context, RunInContext, this);
        }
    }

    public void SetResult() => _core.SetResult(true);

    public void SetException(Exception exception) => _core.SetException(exception);

    public ValueTaskSourceStatus GetStatus(short token) => _core.GetStatus(token);

    public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
        _core.OnCompleted(continuation, state, token, flags);

    public void GetResult(short token)
    {
        try
        {
            _core.GetResult(token);
        }
        finally
        {
            Return();
        }
    }
}
