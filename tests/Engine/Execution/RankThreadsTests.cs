using LoraEngine.Execution;
using LoraEngine.Tensors;
using LoraEngine.Tensors.Distributed;
using Xunit;

namespace LoraEngine.Engine.Tests.Execution;

/// <summary>
/// The ranks of a step run on threads of their own, rank 0 on the caller's; a rank that fails does not leave the
/// others waiting in a collective: the group is aborted, and the rank's own error (not the others' cancellation) is
/// what the step throws.
/// </summary>
public sealed class RankThreadsTests : IDisposable
{
    readonly ComputeDevice[] _devices = [ComputeDevice.CreateCpu(), ComputeDevice.CreateCpu()];

    public void Dispose()
    {
        foreach (var d in _devices) d.Dispose();
    }

    [Fact]
    public void Every_rank_runs_on_a_thread_of_its_own_each_step()
    {
        using var threads = new RankThreads(3, abort: () => { });
        for (int step = 0; step < 3; step++)
        {
            var ids = new int[3];
            threads.Run(r => ids[r] = Environment.CurrentManagedThreadId);
            Assert.Equal(Environment.CurrentManagedThreadId, ids[0]);
            Assert.Equal(3, ids.Distinct().Count());
        }
    }

    [Fact]
    public void A_failing_rank_releases_the_ranks_waiting_for_it_and_its_error_is_thrown()
    {
        var comms = HostStagedCommunicator.CreateGroup(2);
        using var threads = new RankThreads(2, abort: () => comms[0].Abort());
        using var t0 = _devices[0].Zeros(DType.F32, 4);
        var e = Assert.Throws<InvalidOperationException>(() => threads.Run(r =>
        {
            if (r == 1) throw new InvalidOperationException("rank 1 failed on its device");
            comms[0].AllReduceSum(t0); // waits for rank 1, which never comes
        }));
        Assert.Equal("rank 1 failed on its device", e.Message);
    }
}
