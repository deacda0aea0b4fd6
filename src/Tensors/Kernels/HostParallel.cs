using System.Runtime.ExceptionServices;

namespace LoraEngine.Tensors.Kernels;

/// <summary>Work the CPU device splits over its cores: <see cref="Run"/> is called once for every index in [0, count).</summary>
internal abstract class HostJob
{
    public abstract void Run(int index);
}

/// <summary>
/// The CPU device's cores as one persistent team: the calling thread plus one worker per further core, taking indices
/// of a <see cref="HostJob"/> from a shared counter. Unlike Parallel.For it allocates nothing per call and its workers
/// spin briefly between calls, so the ~120 linears of a decode step do not each pay a thread-pool wake-up. One job runs
/// at a time (callers from several threads take turns); a job must not start another.
/// </summary>
internal static class HostParallel
{
    /// <summary>How long an idle worker polls for the next job before it sleeps (the gap between two ops of a step is shorter).</summary>
    static readonly long SpinTicks = System.Diagnostics.Stopwatch.Frequency / 5000; // 200 µs

    static readonly object s_submit = new();
    static readonly SemaphoreSlim s_wake = new(0);
    static readonly int s_workers = Math.Max(0, Environment.ProcessorCount - 1);

    static HostJob? s_job;
    static int s_count;
    static int s_next;
    static int s_pending;
    static long s_generation;
    static int s_sleeping;
    static Exception? s_error;
    static bool s_started;

    /// <summary>Threads that take part in a job: the caller and the workers.</summary>
    public static int Threads => s_workers + 1;

    /// <summary>Runs job.Run(i) for every i in [0, count), spread over the cores, and returns when all have finished.</summary>
    public static void For(int count, HostJob job)
    {
        if (count <= 0) return;
        if (count == 1 || s_workers == 0)
        {
            for (int i = 0; i < count; i++) job.Run(i);
            return;
        }
        lock (s_submit)
        {
            if (!s_started) Start();
            s_job = job;
            s_count = count;
            s_error = null;
            Volatile.Write(ref s_next, 0);
            Volatile.Write(ref s_pending, s_workers);
            Interlocked.Increment(ref s_generation);
            int sleeping = Interlocked.Exchange(ref s_sleeping, 0);
            if (sleeping > 0) s_wake.Release(sleeping);

            Work(job, count);
            var spin = new SpinWait();
            while (Volatile.Read(ref s_pending) != 0) spin.SpinOnce(sleep1Threshold: -1);
            s_job = null;
            if (s_error is { } error) ExceptionDispatchInfo.Throw(error);
        }
    }

    static void Work(HostJob job, int count)
    {
        try
        {
            for (int i = Interlocked.Increment(ref s_next) - 1; i < count; i = Interlocked.Increment(ref s_next) - 1) job.Run(i);
        }
        catch (Exception e)
        {
            Interlocked.CompareExchange(ref s_error, e, null);
            Volatile.Write(ref s_next, count); // the others stop taking indices
        }
    }

    static void Start()
    {
        for (int w = 0; w < s_workers; w++)
            new Thread(WorkerLoop) { IsBackground = true, Name = $"LoraEngine CPU worker {w + 1}" }.Start();
        s_started = true;
    }

    static void WorkerLoop()
    {
        long seen = 0;
        while (true)
        {
            long generation = WaitForJob(seen);
            seen = generation;
            var job = Volatile.Read(ref s_job);
            if (job != null) Work(job, s_count);
            Interlocked.Decrement(ref s_pending);
        }
    }

    /// <summary>Polls for a new generation for a short while, then sleeps until the next job wakes it.</summary>
    static long WaitForJob(long seen)
    {
        long start = System.Diagnostics.Stopwatch.GetTimestamp();
        var spin = new SpinWait();
        while (true)
        {
            long g = Volatile.Read(ref s_generation);
            if (g != seen) return g;
            if (System.Diagnostics.Stopwatch.GetTimestamp() - start < SpinTicks)
            {
                spin.SpinOnce(sleep1Threshold: -1);
                continue;
            }
            Interlocked.Increment(ref s_sleeping);
            // Re-check after announcing: a job published before the announcement released no permit for us. (If one
            // did, the permit is left over and only causes a spurious wake-up later, which the loop absorbs.)
            if (Volatile.Read(ref s_generation) != seen) continue;
            s_wake.Wait();
            start = System.Diagnostics.Stopwatch.GetTimestamp();
        }
    }
}
