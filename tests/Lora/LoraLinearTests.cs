using FsCheck.Xunit;
using LoraEngine.Lora;
using LoraEngine.Models.Llama;
using LoraEngine.Tensors;
using LoraEngine.Tensors.Kernels;
using LoraEngine.TestSupport;
using Xunit;

namespace LoraEngine.Lora.Tests;

/// <summary>
/// A LoRA linear over a random mixed batch equals, token by token, the merged-weight reference
/// y = (W + scale·B·A) x of that token's adapter (or W x without one).
/// </summary>
public class LoraLinearTests
{
    sealed record Adapter(int Rank, float Scale, float[] A, float[] B);

    static StepBatch BatchFor(ComputeDevice device, int tokens, DeviceTensor slots, List<IDisposable> owned)
    {
        var dummy = device.Zeros(DType.I32, tokens);
        owned.Add(dummy);
        return new StepBatch
        {
            NumTokens = tokens, TokenIds = dummy, Positions = dummy, SlotMapping = dummy, TokenSequence = dummy,
            BlockTables = dummy.Reshape(1, tokens), LogitRows = dummy,
            LinearContext = new LoraBatchMapping(slots, anyAdapter: true),
        };
    }

    static float[] Run(ComputeDevice device, float[] w, DType wType, DType loraType, int inF, int outF, int maxSlots, int maxRank,
        Adapter?[] slots, int[] tokenSlots, float[] x, bool stacked = false)
    {
        var owned = new List<IDisposable>();
        try
        {
            int tokens = tokenSlots.Length;
            var (wt, _) = RandomData.UploadWeight(device, w, wType, outF, inF);
            // A stacked shrink takes every slot's columns, with room for three linears.
            var shrink = device.Zeros(DType.F32, stacked ? LoraOps.MaxGroup * tokens * maxSlots : tokens, maxRank);
            owned.Add(shrink);
            LoraLinear lora;
            if (stacked)
            {
                var stack = StackedLoraA.Allocate(device, loraType, 1, maxSlots, maxRank, inF);
                owned.Add(stack);
                lora = new LoraLinear(new DenseLinear(wt), maxSlots, maxRank, loraType, device, shrink, stack, 0);
            }
            else lora = new LoraLinear(new DenseLinear(wt), maxSlots, maxRank, loraType, device, shrink);
            owned.Add(lora);
            for (int s = 0; s < slots.Length; s++)
                if (slots[s] is { } a) lora.SetSlot(s, a.Rank, a.Scale, a.A, a.B);
            var slotTensor = device.Upload(tokenSlots, tokens);
            owned.Add(slotTensor);
            var xt = device.Upload(x, tokens, inF);
            owned.Add(xt);
            var y = device.Allocate(DType.F32, tokens, outF);
            owned.Add(y);
            lora.Forward(y, xt, BatchFor(device, tokens, slotTensor, owned));
            return y.ToArray<float>();
        }
        finally
        {
            foreach (var o in owned) o.Dispose();
        }
    }

    static float[] MergedReference(float[] w, int inF, int outF, Adapter?[] slots, int[] tokenSlots, float[] x)
    {
        var y = new float[tokenSlots.Length * outF];
        for (int t = 0; t < tokenSlots.Length; t++)
        {
            var a = tokenSlots[t] >= 0 ? slots[tokenSlots[t]] : null;
            for (int o = 0; o < outF; o++)
            {
                double sum = 0;
                for (int i = 0; i < inF; i++)
                {
                    double merged = w[o * inF + i];
                    if (a != null)
                        for (int r = 0; r < a.Rank; r++) merged += a.Scale * (double)a.B[o * a.Rank + r] * a.A[r * inF + i];
                    sum += merged * x[t * inF + i];
                }
                y[t * outF + o] = (float)sum;
            }
        }
        return y;
    }

    [Property(MaxTest = 12)]
    public void Mixed_batch_equals_merged_weight_reference(int seed)
    {
        var rnd = new RandomData(seed);
        int inF = rnd.Int(1, 48), outF = rnd.Int(1, 48), maxSlots = rnd.Int(1, 4), maxRank = rnd.Int(1, 16);
        int tokens = rnd.Int(1, 12);
        var wType = rnd.WeightType();
        var w = rnd.Floats(outF * inF);
        var stored = RandomData.UploadWeight(TestDevices.Cpu, w, wType, outF, inF).Stored;
        var adapters = new Adapter?[maxSlots];
        for (int s = 0; s < maxSlots; s++)
        {
            if (rnd.Int(0, 4) == 0) continue; // an empty slot
            int r = rnd.Int(1, maxRank);
            adapters[s] = new Adapter(r, (float)(rnd.Random.NextDouble() * 4), rnd.Floats(r * inF, 0.5f), rnd.Floats(outF * r, 0.5f));
        }
        var tokenSlots = Enumerable.Range(0, tokens).Select(_ => rnd.Int(-1, maxSlots - 1)).ToArray();
        var x = rnd.Floats(tokens * inF);
        // Empty slots are zero: tokens mapped there get the base output.
        var expected = MergedReference(stored, inF, outF, adapters, tokenSlots, x);
        foreach (var device in TestDevices.All)
            foreach (bool stacked in new[] { false, true })
            {
                var y = Run(device, w, wType, DType.F32, inF, outF, maxSlots, maxRank, adapters, tokenSlots, x, stacked);
                Tolerance.AssertClose(y, expected, 1e-4, 1e-4, $"{device} {wType}{(stacked ? " stacked" : "")}");
            }
    }

    [Property(MaxTest = 10)]
    public void A_token_result_does_not_depend_on_its_batch(int seed)
    {
        var rnd = new RandomData(seed);
        int inF = rnd.Int(8, 70), outF = rnd.Int(8, 70), rank = rnd.Int(1, 8);
        var w = rnd.Floats(outF * inF);
        var adapter = new Adapter(rank, 2f, rnd.Floats(rank * inF), rnd.Floats(outF * rank));
        var adapters = new Adapter?[] { adapter, null };
        var x = rnd.Floats(inF);
        var device = TestDevices.Configured;
        // The same token as row 3 of a batch of 6 (the GEMV path) with other tokens on other adapters or none.
        int others = 6;
        var xs = rnd.Floats(others * inF);
        x.CopyTo(xs, 3 * inF);
        foreach (var (loraType, stacked) in new[] { (DType.F32, false), (DType.BF16, true) })
        {
            var alone = Run(device, w, DType.BF16, loraType, inF, outF, 2, 8, adapters, [0], x, stacked);
            var batched = Run(device, w, DType.BF16, loraType, inF, outF, 2, 8, adapters, [-1, 1, 0, 0, -1, 0], xs, stacked);
            Assert.Equal(alone, batched.AsSpan(3 * outF, outF).ToArray());
        }
    }

    [Fact]
    public void No_adapter_in_the_batch_gives_the_base_output_exactly()
    {
        var device = TestDevices.Configured;
        var rnd = new RandomData(11);
        var w = rnd.Floats(30 * 20);
        var x = rnd.Floats(3 * 20);
        var adapters = new Adapter?[] { new Adapter(4, 1f, rnd.Floats(4 * 20), rnd.Floats(30 * 4)) };
        var withLora = Run(device, w, DType.F32, DType.F32, 20, 30, 1, 4, adapters, [-1, -1, -1], x);
        using var wt = device.Upload(w, 30, 20);
        using var xt = device.Upload(x, 3, 20);
        using var y = device.Allocate(DType.F32, 3, 30);
        device.MatMul.Linear(y, xt, wt);
        Assert.Equal(y.ToArray<float>(), withLora);
    }

    [Fact]
    public void SetSlot_rejects_bad_arguments()
    {
        var device = TestDevices.Cpu;
        using var w = device.Zeros(DType.F32, 6, 5);
        using var shrink = device.Zeros(DType.F32, 4, 4);
        using var lora = new LoraLinear(new DenseLinear(w), 2, 4, DType.F32, device, shrink);
        Assert.Equal("slot", Assert.Throws<ArgumentOutOfRangeException>(() => lora.SetSlot(2, 1, 1f, new float[5], new float[6])).ParamName);
        Assert.Equal("rank", Assert.Throws<ArgumentOutOfRangeException>(() => lora.SetSlot(0, 5, 1f, new float[25], new float[30])).ParamName);
        Assert.Equal("a", Assert.Throws<ArgumentException>(() => lora.SetSlot(0, 2, 1f, new float[5], new float[12])).ParamName);
        Assert.Equal("b", Assert.Throws<ArgumentException>(() => lora.SetSlot(0, 2, 1f, new float[10], new float[6])).ParamName);
    }

    [Theory]
    [InlineData(DType.BF16, 48, 16)] // the wide kernels
    [InlineData(DType.F32, 13, 3)]   // the scalar kernels
    public void Linears_sharing_an_input_add_their_deltas_together_with_the_bits_of_each_alone(DType loraType, int inF, int maxRank)
    {
        var rnd = new RandomData(inF);
        int tokens = 5, maxSlots = 2;
        int[] outs = [24, 8, 9];
        var tokenSlots = new[] { 0, -1, 1, 0, 2 }; // 2: out of range
        var x = rnd.Floats(tokens * inF);
        foreach (var device in TestDevices.All)
        {
            var owned = new List<IDisposable>();
            try
            {
                var shared = device.Zeros(DType.F32, 3 * tokens, maxRank);
                var small = device.Zeros(DType.F32, tokens, maxRank);
                owned.AddRange([shared, small]);
                LoraLinear NewLinear(int outF, DeviceTensor buffer)
                {
                    var lora = new LoraLinear(new DenseLinear(device.Upload(rnd.Floats(outF * inF), outF, inF)), maxSlots, maxRank, loraType, device, buffer);
                    owned.Add(lora);
                    for (int s = 0; s < maxSlots; s++)
                        lora.SetSlot(s, maxRank - s, 0.5f + s, rnd.Floats((maxRank - s) * inF), rnd.Floats(outF * (maxRank - s)));
                    return lora;
                }
                var linears = outs.Select(o => NewLinear(o, shared)).ToArray();
                var slots = device.Upload(tokenSlots, tokens);
                var xt = device.Upload(x, tokens, inF);
                owned.AddRange([slots, xt]);
                var batch = BatchFor(device, tokens, slots, owned);
                DeviceTensor[] Outputs() => outs.Select(o => { var y = device.Zeros(DType.F32, tokens, o); owned.Add(y); return y; }).ToArray();

                var alone = Outputs();
                for (int i = 0; i < 3; i++) linears[i].Forward(alone[i], xt, batch);
                var together = Outputs();
                SharedInputLinears.Forward(xt, batch, (together[0], linears[0]), (together[1], linears[1]), (together[2], linears[2]));
                for (int i = 0; i < 3; i++) Assert.Equal(alone[i].ToArray<float>(), together[i].ToArray<float>());

                // Not together, and nothing added: a buffer without a part per linear, a linear that is not a LoRA linear.
                var cramped = new[] { NewLinear(8, small), NewLinear(8, small) };
                var before = together[1].ToArray<float>();
                Assert.False(LoraLinear.AddDeltas(xt, batch, [(together[1], cramped[0]), (together[1], cramped[1])]));
                Assert.False(LoraLinear.AddDeltas(xt, batch, [(together[0], linears[0]), (together[1], cramped[0].Base)]));
                Assert.Equal(before, together[1].ToArray<float>());
                Assert.True(LoraLinear.AddDeltas(xt, batch, [(together[0], linears[0]), (together[1], linears[1])]));
            }
            finally
            {
                foreach (var o in owned) o.Dispose();
            }
        }
    }

    [Theory]
    [InlineData(DType.BF16, DType.BF16, 48)] // the base products and the stacked A in one tensor-core launch on CUDA
    [InlineData(DType.F32, DType.F32, 13)]
    public void Stacked_linears_sharing_an_input_give_the_bits_of_each_alone_and_the_shrink_kernels_values(DType wType, DType loraType, int inF)
    {
        var rnd = new RandomData(inF + 5);
        int tokens = 5, maxSlots = 2, maxRank = 8;
        int[] outs = [24, 8, 9];
        var tokenSlots = new[] { 0, -1, 1, 0, 2 }; // 2: out of range
        var x = rnd.Floats(tokens * inF);
        var weights = outs.Select(o => rnd.Floats(o * inF)).ToArray();
        var adapters = outs.Select(o => Enumerable.Range(0, maxSlots).Select(s => (A: rnd.Floats((maxRank - s) * inF), B: rnd.Floats(o * (maxRank - s)))).ToArray()).ToArray();
        foreach (var device in TestDevices.All)
        {
            var owned = new List<IDisposable>();
            try
            {
                var plainBuffer = device.Zeros(DType.F32, LoraOps.MaxGroup * tokens, maxRank);
                var stackedBuffer = device.Zeros(DType.F32, LoraOps.MaxGroup * tokens * maxSlots, maxRank);
                var stack = StackedLoraA.Allocate(device, loraType, outs.Length, maxSlots, maxRank, inF);
                owned.AddRange([plainBuffer, stackedBuffer, stack]);
                LoraLinear NewLinear(int i, bool stacked)
                {
                    var w = RandomData.UploadWeight(device, weights[i], wType, outs[i], inF).Tensor;
                    var lora = stacked
                        ? new LoraLinear(new DenseLinear(w), maxSlots, maxRank, loraType, device, stackedBuffer, stack, i)
                        : new LoraLinear(new DenseLinear(w), maxSlots, maxRank, loraType, device, plainBuffer);
                    owned.Add(lora);
                    for (int s = 0; s < maxSlots; s++) lora.SetSlot(s, maxRank - s, 0.5f + s, adapters[i][s].A, adapters[i][s].B);
                    return lora;
                }
                var plain = Enumerable.Range(0, outs.Length).Select(i => NewLinear(i, false)).ToArray();
                var stackedLinears = Enumerable.Range(0, outs.Length).Select(i => NewLinear(i, true)).ToArray();
                var slots = device.Upload(tokenSlots, tokens);
                var xt = device.Upload(x, tokens, inF);
                owned.AddRange([slots, xt]);
                var batch = BatchFor(device, tokens, slots, owned);
                DeviceTensor[] Outputs() => outs.Select(o => { var y = device.Zeros(DType.F32, tokens, o); owned.Add(y); return y; }).ToArray();

                var reference = Outputs();
                SharedInputLinears.Forward(xt, batch, (reference[0], plain[0]), (reference[1], plain[1]), (reference[2], plain[2]));
                var alone = Outputs();
                for (int i = 0; i < 3; i++) stackedLinears[i].Forward(alone[i], xt, batch);
                var together = Outputs();
                SharedInputLinears.Forward(xt, batch, (together[0], stackedLinears[0]), (together[1], stackedLinears[1]), (together[2], stackedLinears[2]));
                // Stacked: every slot's shrink of every token (token 0 is on slot 0; slot 1's columns hold its A·x too).
                Assert.Contains(stackedBuffer.ToArray<float>().AsSpan(maxRank, maxRank).ToArray(), v => v != 0);
                var added = Outputs();
                for (int i = 0; i < 3; i++) plain[i].Base.Forward(added[i], xt, batch);
                Assert.True(LoraLinear.AddDeltas(xt, batch, [(added[0], stackedLinears[0]), (added[1], stackedLinears[1]), (added[2], stackedLinears[2])]));
                var partial = Outputs();
                for (int i = 0; i < 2; i++) stackedLinears[i].Base.Forward(partial[i], xt, batch);
                // Two of the three members are not their whole stack: nothing added together, each adds its own.
                Assert.False(LoraLinear.AddDeltas(xt, batch, [(partial[0], stackedLinears[0]), (partial[1], stackedLinears[1])]));
                // Expands left pending (where the device's ops add them in their own launches) and added after: the same bits.
                bool pends = loraType == DType.BF16 && !ReferenceEquals(device, TestDevices.CpuFast); // the CPU device adds every expand at once
                var pendingGroup = Outputs();
                var expands = new PendingExpand?[3];
                SharedInputLinears.ForwardPending(xt, batch, expands, (pendingGroup[0], stackedLinears[0]), (pendingGroup[1], stackedLinears[1]), (pendingGroup[2], stackedLinears[2]));
                for (int i = 0; i < 3; i++)
                {
                    Assert.Equal(pends, expands[i] != null);
                    if (expands[i] is { } e) device.Lora.ExpandAt(pendingGroup[i], e);
                }
                var pendingAlone = Outputs();
                for (int i = 0; i < 3; i++)
                {
                    // Each before the next linear: a pending expand reads the shrink buffer the LoRA linears share.
                    var own = stackedLinears[i].ForwardPending(pendingAlone[i], xt, batch);
                    Assert.Equal(pends, own != null);
                    if (own != null) device.Lora.ExpandAt(pendingAlone[i], own);
                }
                for (int i = 0; i < 3; i++)
                {
                    Assert.Equal(alone[i].ToArray<float>(), together[i].ToArray<float>());
                    Assert.Equal(alone[i].ToArray<float>(), added[i].ToArray<float>());
                    Assert.Equal(alone[i].ToArray<float>(), pendingGroup[i].ToArray<float>());
                    Assert.Equal(alone[i].ToArray<float>(), pendingAlone[i].ToArray<float>());
                    Tolerance.AssertClose(together[i].ToArray<float>(), reference[i].ToArray<float>(), 1e-5, 1e-5, $"{device} member {i}");
                }
            }
            finally
            {
                foreach (var o in owned) o.Dispose();
            }
        }
    }
}
