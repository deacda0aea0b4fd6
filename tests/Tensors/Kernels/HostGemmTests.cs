using FsCheck.Xunit;
using LoraEngine.Tensors.Kernels;
using LoraEngine.Tensors.Reference;
using LoraEngine.TestSupport;
using Xunit;

namespace LoraEngine.Tensors.Tests.Kernels;

/// <summary>
/// The CPU device's linear (HostGemm on AVX-512 machines, the portable path elsewhere) on odd shapes that cross its
/// paths: streamed weights (≤ 6 tokens) and packed panels (more), partial row and token tiles, k-blocks, in % 16 tails.
/// </summary>
public class HostGemmTests
{
    static ComputeDevice Device => TestDevices.CpuFast;

    /// <summary>Token counts on both sides of the paths: streamed (≤ 6), packed (a few token tiles, or many).</summary>
    static int Tokens(RandomData rnd) => rnd.Int(0, 3) switch
    {
        0 => rnd.Int(1, HostGemm.MaxStreamTokens),
        1 or 2 => rnd.Int(HostGemm.MaxStreamTokens + 1, 40),
        _ => rnd.Int(90, 110),
    };

    static float[] Run(float[] x, DeviceTensor w, int tokens, int inF, int outF)
    {
        using var xt = Device.Upload(x, tokens, inF);
        using var yt = Device.Allocate(DType.F32, tokens, outF);
        Device.MatMul.Linear(yt, xt, w);
        return yt.ToArray<float>();
    }

    /// <summary>|y − reference| ≤ in · 2⁻²² · Σ|w·x| + 1e-30, element by element (F32 accumulation of in products).</summary>
    static void AssertWithinRoundingBound(float[] got, float[] x, float[] w, int tokens, int inF, int outF, string what)
    {
        var expected = MatMulReference.Linear(x, w, tokens, inF, outF);
        for (int t = 0; t < tokens; t++)
            for (int o = 0; o < outF; o++)
            {
                double magnitude = 0;
                for (int i = 0; i < inF; i++) magnitude += Math.Abs((double)w[o * inF + i] * x[t * inF + i]);
                double bound = inF * Math.Pow(2, -22) * magnitude + 1e-30;
                double error = Math.Abs((double)got[t * outF + o] - expected[t * outF + o]);
                Assert.True(error <= bound, $"{what} y[{t}, {o}] = {got[t * outF + o]}, expected {expected[t * outF + o]} (error {error:E2} > bound {bound:E2})");
            }
    }

    [Property(MaxTest = 40)]
    public void Linear_matches_the_double_reference_on_odd_shapes(int seed)
    {
        var rnd = new RandomData(seed);
        int tokens = Tokens(rnd);
        int inF = rnd.Int(1, 1100), outF = rnd.Int(1, 70);
        var wType = rnd.WeightType();
        var x = rnd.Floats(tokens * inF);
        var (w, stored) = RandomData.UploadWeight(Device, rnd.Floats(outF * inF), wType, outF, inF);
        using (w) AssertWithinRoundingBound(Run(x, w, tokens, inF, outF), x, stored, tokens, inF, outF, $"{wType} [{tokens}x{inF}]·[{outF}x{inF}]ᵀ");
    }

    [Property(MaxTest = 30)]
    public void A_token_row_is_bit_identical_alone_and_in_a_batch_of_any_size(int seed)
    {
        var rnd = new RandomData(seed);
        int tokens = Math.Max(2, Tokens(rnd)), inF = rnd.Int(1, 1100), outF = rnd.Int(1, 70), me = rnd.Int(0, tokens - 1);
        var wType = rnd.WeightType();
        var x = rnd.Floats(tokens * inF);
        var (w, _) = RandomData.UploadWeight(Device, rnd.Floats(outF * inF), wType, outF, inF);
        using (w)
        {
            var batch = Run(x, w, tokens, inF, outF);
            var alone = Run(x.AsSpan(me * inF, inF).ToArray(), w, 1, inF, outF);
            Assert.Equal(alone, batch.AsSpan(me * outF, outF).ToArray());
        }
    }

    [Fact]
    public void A_token_row_is_bit_identical_alone_and_in_a_batch_over_several_k_blocks()
    {
        // in = 2100: three k-blocks of the packed path plus a tail; 20 tokens: four token tiles, the last partial.
        var rnd = new RandomData(11);
        const int inF = 2100, outF = 37, tokens = 20;
        var x = rnd.Floats(tokens * inF);
        var (w, stored) = RandomData.UploadWeight(Device, rnd.Floats(outF * inF), DType.BF16, outF, inF);
        using (w)
        {
            var batch = Run(x, w, tokens, inF, outF);
            AssertWithinRoundingBound(batch, x, stored, tokens, inF, outF, "batch");
            foreach (int me in new[] { 0, 7, tokens - 1 })
                Assert.Equal(Run(x.AsSpan(me * inF, inF).ToArray(), w, 1, inF, outF), batch.AsSpan(me * outF, outF).ToArray());
        }
    }

    [Fact]
    public void Rows_of_a_large_layer_match_the_reference()
    {
        // A decode-sized and a prefill-sized call on a layer big enough to be split over the cores.
        var rnd = new RandomData(5);
        const int inF = 520, outF = 301;
        var (w, stored) = RandomData.UploadWeight(Device, rnd.Floats(outF * inF), DType.BF16, outF, inF);
        using (w)
            foreach (int tokens in new[] { 1, 23 })
            {
                var x = rnd.Floats(tokens * inF);
                AssertWithinRoundingBound(Run(x, w, tokens, inF, outF), x, stored, tokens, inF, outF, $"tokens {tokens}");
            }
    }

    /// <summary>
    /// One output in the order <see cref="HostGemm"/> documents, in scalar C#: k-steps of 16 lanes, the even steps into one
    /// accumulator and the odd ones into another (an FMA per lane), their lane-wise sum, the halving tree of
    /// <see cref="HostDot.Reduce"/>, then the in % 16 tail terms one FMA at a time.
    /// </summary>
    static float DocumentedOrder(ReadOnlySpan<float> w, ReadOnlySpan<float> x)
    {
        int k16 = w.Length & ~15;
        Span<float> even = stackalloc float[16], odd = stackalloc float[16], v = stackalloc float[16];
        even.Clear();
        odd.Clear();
        for (int s = 0; s < k16 / 16; s++)
        {
            var chain = s % 2 == 0 ? even : odd;
            for (int l = 0; l < 16; l++) chain[l] = MathF.FusedMultiplyAdd(w[16 * s + l], x[16 * s + l], chain[l]);
        }
        for (int l = 0; l < 16; l++) v[l] = even[l] + odd[l];
        for (int half = 8; half >= 2; half /= 2)
            for (int l = 0; l < half; l++) v[l] += v[l + half];
        float sum = v[0] + v[1];
        for (int k = k16; k < w.Length; k++) sum = MathF.FusedMultiplyAdd(w[k], x[k], sum);
        return sum;
    }

    /// <summary>
    /// Every output has the documented order's bits, on both tile kinds (AVX-512, and AVX2 with each 16-lane accumulator
    /// as two halves) and on both paths: so a model gives the same bits on either kind of machine.
    /// </summary>
    [Property(MaxTest = 30)]
    public void Every_output_has_the_bits_of_the_documented_order(int seed)
    {
        Assert.SkipUnless(HostGemm.IsSupported, "this machine has neither AVX-512 nor AVX2 with FMA: the portable path runs, in its own order");
        var rnd = new RandomData(seed);
        int tokens = Tokens(rnd), inF = rnd.Int(1, 2200), outF = rnd.Int(1, 40);
        var wType = rnd.WeightType();
        var x = rnd.Floats(tokens * inF);
        var (w, stored) = RandomData.UploadWeight(Device, rnd.Floats(outF * inF), wType, outF, inF);
        using (w)
        {
            var y = Run(x, w, tokens, inF, outF);
            for (int t = 0; t < tokens; t++)
                for (int o = 0; o < outF; o++)
                {
                    float expected = DocumentedOrder(stored.AsSpan(o * inF, inF), x.AsSpan(t * inF, inF));
                    Assert.True(BitConverter.SingleToInt32Bits(expected) == BitConverter.SingleToInt32Bits(y[t * outF + o]),
                        $"{wType} [{tokens}x{inF}]·[{outF}x{inF}]ᵀ y[{t}, {o}] = {y[t * outF + o]:R}, the documented order gives {expected:R}");
                }
        }
    }
}
