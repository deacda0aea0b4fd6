using LoraEngine.Tensors.Kernels;
using Xunit;

namespace LoraEngine.Tensors.Tests.Kernels;

public class HostParallelTests
{
    sealed class CountingJob(int count) : HostJob
    {
        public readonly int[] Runs = new int[count];

        public override void Run(int index) => Interlocked.Increment(ref Runs[index]);
    }

    sealed class FailingJob : HostJob
    {
        public override void Run(int index)
        {
            if (index == 7) throw new InvalidOperationException("job 7 failed");
        }
    }

    [Fact]
    public void Every_index_runs_exactly_once()
    {
        foreach (int count in new[] { 0, 1, 2, 3, 100, 1000 })
        {
            var job = new CountingJob(count);
            HostParallel.For(count, job);
            Assert.All(job.Runs, n => Assert.Equal(1, n));
        }
    }

    [Fact]
    public void Jobs_back_to_back_each_run_every_index_once()
    {
        // Many short jobs in a row: a worker still finishing or waking for one job must not run indices of the next.
        var rnd = new Random(11);
        for (int i = 0; i < 3000; i++)
        {
            var job = new CountingJob(rnd.Next(2, 40));
            HostParallel.For(job.Runs.Length, job);
            Assert.All(job.Runs, n => Assert.Equal(1, n));
        }
    }

    [Fact]
    public void Callers_on_several_threads_take_turns()
    {
        var jobs = Enumerable.Range(0, 8).Select(_ => new CountingJob(500)).ToArray();
        Parallel.ForEach(jobs, job =>
        {
            for (int i = 0; i < 20; i++) HostParallel.For(25 * (i % 5 + 1), job);
        });
        // Each job ran 4 times with 25, 50, 75, 100, 125 indices: index i ran once per call whose count exceeds i.
        foreach (var job in jobs)
            for (int i = 0; i < 500; i++) Assert.Equal(4 * Enumerable.Range(1, 5).Count(k => 25 * k > i), job.Runs[i]);
    }

    [Fact]
    public void An_exception_in_a_job_reaches_the_caller_and_the_team_keeps_working()
    {
        var e = Assert.Throws<InvalidOperationException>(() => HostParallel.For(64, new FailingJob()));
        Assert.Equal("job 7 failed", e.Message);
        var job = new CountingJob(64);
        HostParallel.For(64, job);
        Assert.All(job.Runs, n => Assert.Equal(1, n));
    }
}
