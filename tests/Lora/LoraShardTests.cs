using FsCheck.Xunit;
using LoraEngine.Lora;
using LoraEngine.Models.Llama;
using LoraEngine.Tensors;
using LoraEngine.Tensors.Distributed;
using LoraEngine.TestSupport;
using Xunit;

namespace LoraEngine.Lora.Tests;

/// <summary>
/// A LoRA linear split over two CPU devices as vLLM splits it computes what the whole one does on one device, for a
/// mixed batch of adapters: column-parallel (A whole, B's rows), column-parallel fully sharded (A's rank rows too, the
/// shrink all-gathered) — the ranks' outputs side by side — and row-parallel (A's input columns, B whole; fully sharded
/// B's output rows too, the shrink all-reduced) — each rank's partial output, delta included, summed by the all-reduce,
/// so the delta counts once.
/// </summary>
public sealed class LoraShardTests : IDisposable
{
    readonly ComputeDevice[] _ranks = [ComputeDevice.CreateCpu(), ComputeDevice.CreateCpu()];

    public void Dispose()
    {
        foreach (var d in _ranks) d.Dispose();
    }

    sealed record Adapter(int Rank, float Scale, float[] A, float[] B);

    static StepBatch Batch(DeviceTensor slots, int tokens) => new()
    {
        NumTokens = tokens, TokenIds = slots, Positions = slots, SlotMapping = slots, TokenSequence = slots,
        BlockTables = slots.Reshape(1, tokens), LogitRows = slots, LinearContext = new LoraBatchMapping(slots, anyAdapter: true),
    };

    /// <summary>y = the LoRA linear over weight [outF, inF] on one device (shard null) or rank shard.Rank's share of it.</summary>
    static float[] Forward(ComputeDevice device, float[] w, int outF, int inF, int maxRank, Adapter?[] adapters, int[] tokenSlots, float[] x, LoraShard? shard)
    {
        int tokens = tokenSlots.Length, ranks = shard?.Communicator.WorldSize ?? 1, me = shard?.Communicator.Rank ?? 0;
        bool row = shard is { RowParallel: true };
        int localOut = row || shard is null ? outF : outF / ranks, localIn = row ? inF / ranks : inF;
        var localW = new float[localOut * localIn];
        for (int o = 0; o < localOut; o++)
            for (int i = 0; i < localIn; i++)
                localW[o * localIn + i] = w[(row ? o : me * localOut + o) * inF + (row ? me * localIn + i : i)];
        var localX = new float[tokens * localIn];
        for (int t = 0; t < tokens; t++) x.AsSpan(t * inF + (row ? me * localIn : 0), localIn).CopyTo(localX.AsSpan(t * localIn));

        using var shrink = device.Zeros(DType.F32, tokens, maxRank);
        using var local = device.Zeros(DType.F32, tokens, maxRank / ranks);
        using var lora = new LoraLinear(new DenseLinear(device.Upload(localW, localOut, localIn)), adapters.Length, maxRank, DType.F32, device, shrink, shard, local);
        for (int s = 0; s < adapters.Length; s++)
            if (adapters[s] is { } a) lora.SetSlot(s, a.Rank, a.Scale, a.A, a.B);
        using var slots = device.Upload(tokenSlots, tokens);
        using var xt = device.Upload(localX, tokens, localIn);
        using var y = device.Allocate(DType.F32, tokens, localOut);
        lora.Forward(y, xt, Batch(slots, tokens));
        if (row) shard!.Communicator.AllReduceSum(y); // what the layer does after o_proj and down_proj
        return y.ToArray<float>();
    }

    [Property(MaxTest = 8)]
    public void Two_ranks_compute_the_whole_layer(int seed)
    {
        var rnd = new RandomData(seed);
        int inF = 2 * rnd.Int(1, 24), outF = 2 * rnd.Int(1, 24), maxRank = 2 * rnd.Int(1, 8), tokens = rnd.Int(1, 9);
        var w = rnd.Floats(outF * inF);
        var adapters = new Adapter?[3];
        for (int s = 0; s < 2; s++) // slot 2 stays empty
        {
            int r = rnd.Int(1, maxRank);
            adapters[s] = new Adapter(r, (float)(rnd.Random.NextDouble() * 2), rnd.Floats(r * inF, 0.5f), rnd.Floats(outF * r, 0.5f));
        }
        var tokenSlots = Enumerable.Range(0, tokens).Select(_ => rnd.Int(-1, 2)).ToArray();
        var x = rnd.Floats(tokens * inF);
        var expected = Forward(TestDevices.CpuFast, w, outF, inF, maxRank, adapters, tokenSlots, x, shard: null);

        foreach (var (rowParallel, fullySharded) in new[] { (false, false), (false, true), (true, false), (true, true) })
        {
            var comms = HostStagedCommunicator.CreateGroup(2);
            var outputs = new float[2][];
            var errors = new Exception?[2];
            var threads = Enumerable.Range(0, 2).Select(r => new Thread(() => errors[r] = Record.Exception(() =>
                outputs[r] = Forward(_ranks[r], w, outF, inF, maxRank, adapters, tokenSlots, x, new LoraShard(comms[r], rowParallel, fullySharded))))).ToArray();
            foreach (var t in threads) t.Start();
            foreach (var t in threads) Assert.True(t.Join(TimeSpan.FromSeconds(30)));
            Assert.All(errors, Assert.Null);
            string what = $"{(rowParallel ? "row" : "column")}-parallel, fully sharded {fullySharded}, in {inF} out {outF} max rank {maxRank}";
            if (rowParallel)
            {
                Tolerance.AssertClose(outputs[0], expected, 1e-5, 1e-5, what);
                Assert.Equal(outputs[0], outputs[1]); // every rank has the same sum
            }
            else
            {
                var joined = Enumerable.Range(0, tokens).SelectMany(t => outputs[0].AsSpan(t * outF / 2, outF / 2).ToArray().Concat(outputs[1].AsSpan(t * outF / 2, outF / 2).ToArray())).ToArray();
                Tolerance.AssertClose(joined, expected, 1e-5, 1e-5, what);
            }
        }
    }

    [Fact]
    public void Fully_sharded_slots_need_a_max_rank_and_outputs_the_ranks_divide()
    {
        var comms = HostStagedCommunicator.CreateGroup(2);
        using var shrink = _ranks[0].Zeros(DType.F32, 1, 3);
        using var local = _ranks[0].Zeros(DType.F32, 1, 1);
        using var weight = _ranks[0].Zeros(DType.F32, 4, 4);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() =>
            new LoraLinear(new DenseLinear(weight), 1, 3, DType.F32, _ranks[0], shrink, new LoraShard(comms[0], false, true), local));
        Assert.Contains("must be a multiple of 2", e.Message);
        using var fiveRows = _ranks[0].Zeros(DType.F32, 5, 4); // a row-parallel share whose 5 outputs two ranks cannot split
        var rows = Assert.Throws<ArgumentException>(() =>
            new LoraLinear(new DenseLinear(fiveRows), 1, 2, DType.F32, _ranks[0], shrink, new LoraShard(comms[0], true, true), local));
        Assert.Contains("B's 5 output rows over 2 ranks", rows.Message);
    }
}
