using FsCheck.Xunit;
using LoraEngine.Tensors.Kernels;
using LoraEngine.Tensors.Reference;
using LoraEngine.TestSupport;
using Xunit;

namespace LoraEngine.Tensors.Tests.Kernels;

public class MatMulKernelsTests
{
    internal static float[] Run(ComputeDevice device, float[] x, float[] w, DType wType, int tokens, int inF, int outF)
    {
        using var xt = device.Upload(x, tokens, inF);
        using var yt = device.Allocate(DType.F32, tokens, outF);
        var (wt, _) = RandomData.UploadWeight(device, w, wType, outF, inF);
        using (wt) device.MatMul.Linear(yt, xt, wt);
        return yt.ToArray<float>();
    }

    /// <summary>Shapes that hit one GEMV launch (≤ 8 tokens), chunked GEMV (≤ 64) and the tiled GEMM (more), odd sizes included.</summary>
    static (int Tokens, int In, int Out) Shape(RandomData rnd) =>
        (rnd.Int(0, 2) switch { 0 => rnd.Int(1, 8), 1 => rnd.Int(9, 64), _ => rnd.Int(65, 80) }, rnd.Int(1, 70), rnd.Int(1, 70));

    [Property(MaxTest = 20)]
    public void Linear_matches_reference_on_every_device(int seed)
    {
        var rnd = new RandomData(seed);
        var (tokens, inF, outF) = Shape(rnd);
        var wType = rnd.WeightType();
        var x = rnd.Floats(tokens * inF);
        var w = rnd.Floats(outF * inF);
        var stored = RandomData.UploadWeight(TestDevices.CpuFast, w, wType, outF, inF).Stored;
        var expected = MatMulReference.Linear(x, stored, tokens, inF, outF);
        // F32 accumulation over up to 70 terms of magnitude ≤ 1: absolute error well under 1e-5.
        foreach (var device in TestDevices.All)
            Tolerance.AssertClose(Run(device, x, w, wType, tokens, inF, outF), expected, 2e-5, 1e-5, $"{device} {wType} [{tokens}x{inF}]·[{outF}x{inF}]ᵀ");
    }

    [Property(MaxTest = 10)]
    public void Linear_on_the_configured_device_equals_the_cpu_accelerator(int seed)
    {
        var rnd = new RandomData(seed);
        var (tokens, inF, outF) = Shape(rnd);
        var wType = rnd.WeightType();
        var x = rnd.Floats(tokens * inF);
        var w = rnd.Floats(outF * inF);
        Tolerance.AssertClose(Run(TestDevices.Configured, x, w, wType, tokens, inF, outF), Run(TestDevices.Cpu, x, w, wType, tokens, inF, outF), 1e-5, 1e-5);
    }

    [Fact]
    public void A_token_result_is_the_same_alone_and_in_a_decode_batch()
    {
        var rnd = new RandomData(3);
        var w = rnd.Floats(33 * 45);
        var batch = rnd.Floats(6 * 45);
        foreach (var device in TestDevices.All)
        {
            var all = Run(device, batch, w, DType.BF16, 6, 45, 33);
            var alone = Run(device, batch.AsSpan(2 * 45, 45).ToArray(), w, DType.BF16, 1, 45, 33);
            Assert.Equal(alone, all.AsSpan(2 * 33, 33).ToArray());
        }
    }

    /// <summary>
    /// A long k (many chunks per warp on the tensor cores, not a multiple of their 32-wide chunk): a token's result is the
    /// same alone, among 3 and among 40 tokens, a merged launch (q/k/v-like, three row counts) gives what separate ones do,
    /// and all stay close to the double reference.
    /// </summary>
    [Fact]
    public void Long_k_results_are_the_same_alone_in_a_batch_and_in_a_merged_launch()
    {
        var device = TestDevices.ForModel;
        var rnd = new RandomData(11);
        const int k = 2056, tokens = 40, probe = 5;
        int[] outs = [37, 16, 300];
        var x = rnd.Floats(tokens * k);
        var weights = outs.Select(n => RandomData.UploadWeight(device, rnd.Floats(n * k), DType.BF16, n, k)).ToArray();
        using var xAll = device.Upload(x, tokens, k);
        using var xOne = device.Upload(x.AsSpan(probe * k, k), 1, k);
        using var xFew = device.Upload(x.AsSpan(probe * k, 3 * k), 3, k);
        try
        {
            for (int i = 0; i < outs.Length; i++)
            {
                int n = outs[i];
                using var yAll = device.Allocate(DType.F32, tokens, n);
                using var yOne = device.Allocate(DType.F32, 1, n);
                using var yFew = device.Allocate(DType.F32, 3, n);
                device.MatMul.Linear(yAll, xAll, weights[i].Tensor);
                device.MatMul.Linear(yOne, xOne, weights[i].Tensor);
                device.MatMul.Linear(yFew, xFew, weights[i].Tensor);
                var all = yAll.ToArray<float>();
                Assert.Equal(all.AsSpan(probe * n, n).ToArray(), yOne.ToArray<float>());
                Assert.Equal(all.AsSpan(probe * n, 3 * n).ToArray(), yFew.ToArray<float>());
                // Terms of magnitude ≤ 1 over 2056 products: sums of ~±40, F32 accumulation error well under 2e-3.
                Tolerance.AssertClose(all, MatMulReference.Linear(x, weights[i].Stored, tokens, k, n), 2e-3, 1e-4, $"{device} {n}x{k}");
            }
            foreach (int count in new[] { 1, tokens })
            {
                using var xs = count == 1 ? device.Upload(x.AsSpan(probe * k, k), 1, k) : device.Upload(x, tokens, k);
                var ys = outs.Select(n => device.Allocate(DType.F32, count, n)).ToArray();
                var separate = outs.Select(n => device.Allocate(DType.F32, count, n)).ToArray();
                try
                {
                    device.MatMul.LinearGroup(xs, ys.Zip(weights, (y, w) => (y, w.Tensor)).ToArray());
                    for (int i = 0; i < outs.Length; i++)
                    {
                        device.MatMul.Linear(separate[i], xs, weights[i].Tensor);
                        Assert.Equal(separate[i].ToArray<float>(), ys[i].ToArray<float>());
                    }
                }
                finally
                {
                    foreach (var t in ys.Concat(separate)) t.Dispose();
                }
            }
        }
        finally
        {
            foreach (var (t, _) in weights) t.Dispose();
        }
    }

    /// <summary>
    /// The tensor cores' kernels (k split over a group's warps, with and without a round requested ahead; rows split,
    /// activations shared in shared memory; rows and slices of k split, partial sums added by the last group; the tile
    /// kernel; on Hopper the row kernels' wgmma builds, one and two warpgroups a group, and the tile kernel's) give the
    /// same bits for every shape, so choosing one by shape keeps a token's result independent of its batch; on devices
    /// without tensor cores the same shapes are checked against the double reference.
    /// </summary>
    [Fact]
    public void Tensor_core_kernels_give_the_same_bits_and_the_reference_values()
    {
        var device = TestDevices.ForModel;
        var rnd = new RandomData(13);
        var tc = device.MatMul.TensorCores;
        foreach (var (tokens, k, outs) in new (int, int, int[])[] { (1, 40, [16]), (5, 264, [37, 16, 200]), (32, 2056, [64, 130]), (40, 72, [200]), (70, 1000, [37, 16, 80, 48]) })
        {
            var x = rnd.Floats(tokens * k);
            var weights = outs.Select(n => RandomData.UploadWeight(device, rnd.Floats(n * k), DType.BF16, n, k)).ToArray();
            using var xt = device.Upload(x, tokens, k);
            float[][] Run(TensorCoreLinear.Kernels choice)
            {
                if (tc != null) tc.Choice = choice;
                var ys = outs.Select(n => device.Allocate(DType.F32, tokens, n)).ToArray();
                try
                {
                    device.MatMul.LinearGroup(xt, ys.Zip(weights, (y, w) => (y, w.Tensor)).ToArray());
                    return ys.Select(y => y.ToArray<float>()).ToArray();
                }
                finally
                {
                    if (tc != null) tc.Choice = TensorCoreLinear.Kernels.Auto;
                    foreach (var y in ys) y.Dispose();
                }
            }
            try
            {
                var splitK = Run(TensorCoreLinear.Kernels.SplitK);
                if (tc != null)
                {
                    var splitKAhead = Run(TensorCoreLinear.Kernels.SplitKAhead);
                    var splitRows = Run(TensorCoreLinear.Kernels.SplitRows);
                    var splitSlices = Run(TensorCoreLinear.Kernels.SplitSlices);
                    var tiles = Run(TensorCoreLinear.Kernels.Tiles);
                    var warpGroups = tc.HasWarpGroup
                        ? new[] { TensorCoreLinear.Kernels.WarpGroupRows, TensorCoreLinear.Kernels.WarpGroupSlices, TensorCoreLinear.Kernels.WideRows, TensorCoreLinear.Kernels.WideSlices,
                                TensorCoreLinear.Kernels.WarpGroupTiles }.Select(Run).ToArray()
                        : [];
                    for (int i = 0; i < outs.Length; i++)
                    {
                        Assert.Equal(splitK[i], splitKAhead[i]);
                        Assert.Equal(splitK[i], splitRows[i]);
                        Assert.Equal(splitK[i], splitSlices[i]);
                        Assert.Equal(splitK[i], tiles[i]);
                        foreach (var wg in warpGroups) Assert.Equal(splitK[i], wg[i]);
                    }
                }
                for (int i = 0; i < outs.Length; i++)
                    Tolerance.AssertClose(splitK[i], MatMulReference.Linear(x, weights[i].Stored, tokens, k, outs[i]), 2e-3, 1e-4, $"{device} {outs[i]}x{k}, {tokens} tokens");
            }
            finally
            {
                foreach (var (t, _) in weights) t.Dispose();
            }
        }
    }

    /// <summary>
    /// The tensor-core kernels themselves on ILGPU's CPU accelerator, the MMA emulated in plain C#: split-k (both
    /// builds), rows, slices, tiles, and rows and slices through the wgmma build's stage layout in groups of one and of two
    /// warpgroups, and tiles through its 64-token layout (the wgmma emulated as each warp's mma.sync chains, which the
    /// hardware matches bit for bit), and the shape's own pick, give the same bits and the reference values, on shapes
    /// that cross the edges — one token, tokens past one 32-token tile and past one 64-token tile of the tile kernel, K
    /// not a multiple of the 32-wide chunk (264: slice 0 has two chunks, the second partial), more than 64 chunks (2312:
    /// each warp of split-k has ten), fewer chunks than slices, rows not a multiple of 16, 64 or 128 and past one 128-row
    /// group, four linears in one launch. (Small: each emulated MMA is two warp barriers on the CPU accelerator.)
    /// </summary>
    [Fact]
    public void Tensor_core_kernels_with_the_mma_emulated_give_the_same_bits_and_the_reference_values()
    {
        var device = TestDevices.Cpu;
        using var tc = TensorCoreLinear.CreateEmulated(device);
        var rnd = new RandomData(17);
        foreach (var (tokens, k, outs) in new (int, int, int[])[] { (1, 40, [16]), (1, 2312, [16]), (3, 264, [37, 16, 24, 40]), (40, 72, [150]), (66, 40, [20]) })
        {
            var x = rnd.Floats(tokens * k);
            var weights = outs.Select(n => RandomData.UploadWeight(device, rnd.Floats(n * k), DType.BF16, n, k)).ToArray();
            using var xt = device.Upload(x, tokens, k);
            float[][] Run(TensorCoreLinear.Kernels choice)
            {
                tc.Choice = choice;
                var ys = outs.Select(n => device.Allocate(DType.F32, tokens, n)).ToArray();
                try
                {
                    tc.Launch(xt, ys.Zip(weights, (y, w) => (y, w.Tensor)).ToArray());
                    return ys.Select(y => y.ToArray<float>()).ToArray();
                }
                finally
                {
                    foreach (var y in ys) y.Dispose();
                }
            }
            try
            {
                var splitK = Run(TensorCoreLinear.Kernels.SplitK);
                var others = new[] { TensorCoreLinear.Kernels.SplitKAhead, TensorCoreLinear.Kernels.SplitRows, TensorCoreLinear.Kernels.SplitSlices, TensorCoreLinear.Kernels.Tiles,
                        TensorCoreLinear.Kernels.WarpGroupRows, TensorCoreLinear.Kernels.WarpGroupSlices, TensorCoreLinear.Kernels.WideRows,
                        TensorCoreLinear.Kernels.WideSlices, TensorCoreLinear.Kernels.WarpGroupTiles, TensorCoreLinear.Kernels.Auto }
                    .Select(c => (c, Run(c))).ToArray();
                for (int i = 0; i < outs.Length; i++)
                {
                    foreach (var (choice, ys) in others) Assert.True(splitK[i].SequenceEqual(ys[i]), $"{choice} differs from split-k: {outs[i]}x{k}, {tokens} tokens");
                    Tolerance.AssertClose(splitK[i], MatMulReference.Linear(x, weights[i].Stored, tokens, k, outs[i]), 2e-3, 1e-4, $"emulated {outs[i]}x{k}, {tokens} tokens");
                }
            }
            finally
            {
                foreach (var (t, _) in weights) t.Dispose();
            }
        }
    }

    [Fact]
    public void Linear_rejects_bad_arguments()
    {
        var d = TestDevices.Cpu;
        using var x = d.Zeros(DType.F32, 2, 8);
        using var w = d.Zeros(DType.BF16, 5, 8);
        using var y = d.Zeros(DType.F32, 2, 5);
        using var wrongW = d.Zeros(DType.F32, 5, 7);
        using var wrongY = d.Zeros(DType.F32, 2, 4);
        using var ints = d.Zeros(DType.I32, 5, 8);
        Assert.Equal("w", Assert.Throws<ArgumentException>(() => d.MatMul.Linear(y, x, wrongW)).ParamName);
        Assert.Equal("y", Assert.Throws<ArgumentException>(() => d.MatMul.Linear(wrongY, x, w)).ParamName);
        Assert.Equal("w", Assert.Throws<ArgumentException>(() => d.MatMul.Linear(y, x, ints)).ParamName);
        Assert.Equal("x", Assert.Throws<ArgumentException>(() => d.MatMul.Linear(y, ints, w)).ParamName);
    }
}
