using LoraEngine.Tensors.Distributed;
using LoraEngine.TestSupport;
using Xunit;

namespace LoraEngine.Tensors.Tests.Distributed;

/// <summary>
/// The host-staged group on two CPU devices, one thread per rank: the all-reduce is rank 0 + rank 1 in that order (the
/// same bits on both ranks), the all-gather puts rank r's columns at r·n of every row, and a rank that never comes
/// does not leave the others waiting once the group is aborted.
/// </summary>
public sealed class HostStagedCommunicatorTests : IDisposable
{
    readonly ComputeDevice[] _devices = [ComputeDevice.CreateCpu(), ComputeDevice.CreateCpu()];

    public void Dispose()
    {
        foreach (var d in _devices) d.Dispose();
    }

    /// <summary>Runs work(rank) on one thread per rank and waits for both.</summary>
    static void OnRanks(Action<int> work)
    {
        var errors = new Exception?[2];
        var threads = Enumerable.Range(0, 2).Select(r => new Thread(() => errors[r] = Record.Exception(() => work(r)))).ToArray();
        foreach (var t in threads) t.Start();
        foreach (var t in threads) Assert.True(t.Join(TimeSpan.FromSeconds(30)), "a rank did not finish");
        Assert.All(errors, Assert.Null);
    }

    [Fact]
    public void All_reduce_sums_in_rank_order_and_every_rank_gets_the_same_bits()
    {
        var comms = HostStagedCommunicator.CreateGroup(2);
        var data = new[] { new RandomData(1).Floats(3 * 70), new RandomData(2).Floats(3 * 70) };
        var results = new float[2][];
        OnRanks(r =>
        {
            using var t = _devices[r].Upload(data[r], 3, 70);
            for (int repeat = 0; repeat < 3; repeat++) // several collectives in a row reuse the host buffers
            {
                t.CopyFrom<float>(data[r]);
                comms[r].AllReduceSum(t);
            }
            results[r] = t.ToArray<float>();
        });
        var expected = data[0].Zip(data[1], (a, b) => a + b).ToArray();
        Assert.Equal(expected, results[0]);
        Assert.Equal(expected, results[1]);
    }

    [Fact]
    public void All_gather_places_each_ranks_columns_side_by_side()
    {
        var comms = HostStagedCommunicator.CreateGroup(2);
        var outputs = new float[2][];
        OnRanks(r =>
        {
            using var input = _devices[r].Upload(Enumerable.Range(0, 6).Select(i => 100f * r + i).ToArray(), 2, 3); // [2 rows, 3]
            using var output = _devices[r].Zeros(DType.F32, 2, 6);
            comms[r].AllGather(output, input);
            outputs[r] = output.ToArray<float>();
        });
        float[] expected = [0, 1, 2, 100, 101, 102, 3, 4, 5, 103, 104, 105];
        Assert.Equal(expected, outputs[0]);
        Assert.Equal(expected, outputs[1]);
    }

    [Fact]
    public void Ranks_entering_with_different_shapes_are_told_so()
    {
        var comms = HostStagedCommunicator.CreateGroup(2);
        var errors = new Exception?[2];
        OnRanks(r =>
        {
            using var t = _devices[r].Zeros(DType.F32, 4 + r);
            errors[r] = Record.Exception(() => comms[r].AllReduceSum(t));
        });
        Assert.All(errors, e => Assert.Contains("rank 1 entered the collective with 5 elements", Assert.IsType<InvalidOperationException>(e).Message));
    }

    [Fact]
    public void Abort_releases_a_rank_waiting_for_one_that_failed()
    {
        var comms = HostStagedCommunicator.CreateGroup(2);
        using var t = _devices[0].Zeros(DType.F32, 8);
        Exception? error = null;
        var waiting = new Thread(() => error = Record.Exception(() => comms[0].AllReduceSum(t)));
        waiting.Start();
        Assert.False(waiting.Join(50)); // rank 1 never comes
        comms[1].Abort();
        Assert.True(waiting.Join(TimeSpan.FromSeconds(10)), "the waiting rank was not released");
        Assert.IsAssignableFrom<OperationCanceledException>(error);
        Assert.ThrowsAny<OperationCanceledException>(() => comms[0].AllReduceSum(t)); // the group stays broken
    }

    [Fact]
    public void One_rank_and_the_single_rank_communicator_change_nothing()
    {
        using var t = _devices[0].Upload([1f, 2f], 1, 2);
        HostStagedCommunicator.CreateGroup(1)[0].AllReduceSum(t);
        SingleRankCommunicator.Instance.AllReduceSum(t);
        using var gathered = _devices[0].Zeros(DType.F32, 1, 2);
        SingleRankCommunicator.Instance.AllGather(gathered, t);
        Assert.Equal([1f, 2f], gathered.ToArray<float>());
        Assert.Equal([1f, 2f], t.ToArray<float>());
    }
}
