using System.Diagnostics;
using System.Runtime.ExceptionServices;

namespace LoraEngine.Tensors.Kernels;

/// <summary>Work the CPU device splits over its cores: <see cref="Run"/> is called once for every index in [0, count).</summary>
internal abstract class HostJob
{
    public abstract void Run(int index);
}

/// <summary>
/// The CPU device's cores as one persistent team: the calling thread plus one worker per further core. Unlike
/// Parallel.For it allocates nothing per call and its workers spin briefly between calls, so the ~120 linears of a
/// decode step do not each pay a thread-pool wake-up.
///
/// The indices are cut into one contiguous segment per thread, and each thread works through its own segment in order
/// before helping with the others' (taking their remaining indices from the same per-segment tickets). Work items of the
/// linears are consecutive row chunks, so each core streams one long run of memory: on this kind of machine two
/// sequential streams read ~15 % faster than two cores taking alternate chunks. The caller waits only for indices a
/// worker actually took: a worker that wakes late (a loaded machine) finds its segment done by the others and takes
/// nothing. One job runs at a time (callers from several threads take turns); a job must not start another.
/// </summary>
internal static class HostParallel
{
    /// <summary>How long an idle worker polls for the next job before it sleeps (the gap between two ops of a step is shorter).</summary>
    static readonly long SpinTicks = Stopwatch.Frequency / 5000; // 200 µs

    static readonly object s_submit = new();
    static readonly SemaphoreSlim s_wake = new(0);
    static readonly int s_workers = Math.Max(0, Environment.ProcessorCount - 1);

    // The current job: its generation (published last), the job, one ticket per thread's segment
    // (generation in the high 32 bits, the segment's next index in the low 32; 64 bytes apart so that the cores do not
    // share a cache line), each segment's end, and how many indices have finished.
    const int TicketStride = 8;
    static int s_generation;
    static HostJob? s_job;
    static readonly long[] s_tickets = new long[(s_workers + 1) * TicketStride];
    static readonly int[] s_ends = new int[s_workers + 1];
    static int s_done;
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
            int generation = s_generation + 1, threads = s_workers + 1;
            // Close every segment before the job or the ends change: a worker still inside the previous job may have read
            // a ticket of it and not yet the segment's end (or the job); its compare-exchange must now fail. (Without
            // this, on a 16-core machine a late worker took an index of the new job under its old ticket, and that
            // index ran twice.)
            for (int p = 0; p < threads; p++) Volatile.Write(ref s_tickets[p * TicketStride], (long)generation << 32 | int.MaxValue);
            Interlocked.MemoryBarrier(); // closed before any of the writes below is seen
            s_job = job;
            s_error = null;
            Volatile.Write(ref s_done, 0);
            for (int p = 0; p < threads; p++)
            {
                s_ends[p] = (int)((long)(p + 1) * count / threads);
                Volatile.Write(ref s_tickets[p * TicketStride], (long)generation << 32 | (uint)((long)p * count / threads));
            }
            Volatile.Write(ref s_generation, generation);
            int sleeping = Interlocked.Exchange(ref s_sleeping, 0);
            if (sleeping > 0) s_wake.Release(sleeping);

            Work(0, generation, job);
            var spin = new SpinWait();
            while (Volatile.Read(ref s_done) != count) spin.SpinOnce(sleep1Threshold: -1);
            s_job = null;
            if (s_error is { } error) ExceptionDispatchInfo.Throw(error);
        }
    }

    /// <summary>
    /// Thread <paramref name="self"/> runs the indices of <paramref name="generation"/>'s job: its own segment first, then
    /// what is left of the others'. Stops when none are left or a later job began.
    /// </summary>
    static void Work(int self, int generation, HostJob job)
    {
        int threads = s_workers + 1;
        for (int i = 0; i < threads; i++)
            if (!WorkSegment((self + i) % threads, generation, job)) return;
    }

    /// <summary>Takes and runs the indices left in one segment; false when a later job began.</summary>
    static bool WorkSegment(int segment, int generation, HostJob job)
    {
        ref long ticketRef = ref s_tickets[segment * TicketStride];
        while (true)
        {
            long ticket = Volatile.Read(ref ticketRef);
            int index = (int)ticket;
            if ((int)(ticket >> 32) != generation) return false;
            if (index >= s_ends[segment]) return true;
            if (Interlocked.CompareExchange(ref ticketRef, ticket + 1, ticket) != ticket) continue;
            try
            {
                job.Run(index);
            }
            catch (Exception e)
            {
                Interlocked.CompareExchange(ref s_error, e, null);
            }
            finally
            {
                Interlocked.Increment(ref s_done);
            }
        }
    }

    static void Start()
    {
        for (int w = 1; w <= s_workers; w++)
        {
            int self = w;
            new Thread(() => WorkerLoop(self)) { IsBackground = true, Name = $"LoraEngine CPU worker {self}" }.Start();
        }
        s_started = true;
    }

    static void WorkerLoop(int self)
    {
        int seen = 0;
        while (true)
        {
            seen = WaitForJob(seen);
            // The job may already belong to a later generation; Work then finds the tickets' generation different from
            // `seen` and takes nothing, and the next wait returns at once.
            var job = Volatile.Read(ref s_job);
            if (job != null) Work(self, seen, job);
        }
    }

    /// <summary>Polls for a generation other than <paramref name="seen"/> for a short while, then sleeps until a job wakes it.</summary>
    static int WaitForJob(int seen)
    {
        long start = Stopwatch.GetTimestamp();
        var spin = new SpinWait();
        while (true)
        {
            int generation = Volatile.Read(ref s_generation);
            if (generation != seen) return generation;
            if (Stopwatch.GetTimestamp() - start < SpinTicks)
            {
                spin.SpinOnce(sleep1Threshold: -1);
                continue;
            }
            Interlocked.Increment(ref s_sleeping);
            // Re-check after announcing: a job published before the announcement released no permit for us. (If one
            // did, the permit is left over and only causes a spurious wake-up later, which the loop absorbs.)
            if (Volatile.Read(ref s_generation) != seen) continue;
            s_wake.Wait();
            start = Stopwatch.GetTimestamp();
        }
    }
}
