using System.Runtime.ExceptionServices;

namespace LoraEngine.Execution;

/// <summary>
/// One thread per tensor-parallel rank: <see cref="Run"/> runs rank 0's share of a step on the calling thread and every
/// other rank's on a thread of its own, kept for the engine's life (no thread-pool hop per step, and a rank blocked in
/// a collective never starves the pool). When a rank fails, <c>abort</c> breaks the group so the ranks waiting for it
/// in a collective give up, and the first failure is rethrown once every rank has stopped.
/// </summary>
internal sealed class RankThreads : IDisposable
{
    readonly Thread[] _threads;
    readonly SemaphoreSlim[] _start;
    readonly CountdownEvent _done;
    readonly Action _abort;
    Action<int>? _work;
    readonly Exception?[] _errors;
    volatile bool _disposed;

    /// <param name="ranks">ranks, the caller's thread being rank 0 (positive)</param>
    /// <param name="abort">breaks the ranks' communicator group after a failure</param>
    public RankThreads(int ranks, Action abort)
    {
        if (ranks <= 0) throw new ArgumentOutOfRangeException(nameof(ranks), ranks, "at least one rank");
        _abort = abort;
        _errors = new Exception?[ranks];
        _start = Enumerable.Range(0, ranks).Select(_ => new SemaphoreSlim(0)).ToArray();
        _done = new CountdownEvent(1);
        _threads = new Thread[ranks];
        for (int r = 1; r < ranks; r++)
        {
            int rank = r;
            _threads[r] = new Thread(() => Loop(rank)) { IsBackground = true, Name = $"LoraEngine TP rank {rank}" };
            _threads[r].Start();
        }
    }

    /// <summary>Ranks run by <see cref="Run"/>.</summary>
    public int Ranks => _errors.Length;

    /// <summary>Runs work(r) for every rank r concurrently and returns when all have returned; rethrows the first failure.</summary>
    public void Run(Action<int> work)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        Array.Clear(_errors);
        _work = work;
        _done.Reset(Ranks - 1);
        for (int r = 1; r < Ranks; r++) _start[r].Release();
        RunRank(0);
        if (Ranks > 1) _done.Wait();
        _work = null;
        // A rank that failed on its own beats the ranks that gave up waiting for it in a collective.
        var error = _errors.FirstOrDefault(e => e is not null and not OperationCanceledException) ?? _errors.FirstOrDefault(e => e != null);
        if (error != null) ExceptionDispatchInfo.Throw(error);
    }

    void RunRank(int rank)
    {
        try
        {
            _work!(rank);
        }
        catch (Exception e)
        {
            _errors[rank] = e;
            _abort();
        }
    }

    void Loop(int rank)
    {
        while (true)
        {
            _start[rank].Wait();
            if (_disposed) return;
            RunRank(rank);
            _done.Signal();
        }
    }

    /// <summary>Stops the rank threads (after the step in progress, if any).</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        for (int r = 1; r < Ranks; r++) _start[r].Release();
        for (int r = 1; r < Ranks; r++) _threads[r].Join();
        foreach (var s in _start) s.Dispose();
        _done.Dispose();
    }
}
