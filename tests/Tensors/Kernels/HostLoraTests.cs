using FsCheck.Xunit;
using LoraEngine.Tensors.Reference;
using LoraEngine.TestSupport;
using Xunit;

namespace LoraEngine.Tensors.Tests.Kernels;

/// <summary>
/// The CPU device's LoRA shrink/expand on shapes larger than the kernel properties use: ranks of 16 and 32 (whole
/// transposed blocks), ragged ranks, outputs past the last 16-wide block, several slots, gathered tokens.
/// </summary>
public class HostLoraTests
{
    static ComputeDevice Device => TestDevices.CpuFast;

    sealed record Case(int Tokens, int In, int Out, int Slots, int Rank, DType WType, float[] X, float[] Y, float[] A, float[] B, int[] TokenSlots);

    static Case NewCase(int seed)
    {
        var rnd = new RandomData(seed);
        int tokens = rnd.Int(1, 30), inF = rnd.Int(1, 200), outF = rnd.Int(1, 100), slots = rnd.Int(1, 4);
        int rank = rnd.Int(0, 2) switch { 0 => 16, 1 => 32, _ => rnd.Int(1, 40) };
        var tokenSlots = Enumerable.Range(0, tokens).Select(_ => rnd.Int(-1, slots)).ToArray();
        return new Case(tokens, inF, outF, slots, rank, rnd.WeightType(), rnd.Floats(tokens * inF), rnd.Floats(tokens * outF),
            rnd.Floats(slots * rank * inF), rnd.Floats(slots * outF * rank), tokenSlots);
    }

    static (float[] Buffer, float[] Y) Run(Case c, float[] x, float[] y, int[] tokenSlots)
    {
        int tokens = tokenSlots.Length;
        using var xt = Device.Upload(x, tokens, c.In);
        using var yt = Device.Upload(y, tokens, c.Out);
        using var slots = Device.Upload(tokenSlots, tokens);
        using var buffer = Device.Allocate(DType.F32, tokens, c.Rank);
        var (a, _) = RandomData.UploadWeight(Device, c.A, c.WType, c.Slots, c.Rank, c.In);
        var (b, _) = RandomData.UploadWeight(Device, c.B, c.WType, c.Slots, c.Out, c.Rank);
        using (a)
        using (b)
        {
            Device.Lora.Shrink(buffer, xt, a, slots);
            Device.Lora.Expand(yt, buffer, b, slots);
        }
        return (buffer.ToArray<float>(), yt.ToArray<float>());
    }

    [Property(MaxTest = 30)]
    public void Shrink_and_expand_match_the_double_reference(int seed)
    {
        var c = NewCase(seed);
        var a = RandomData.UploadWeight(Device, c.A, c.WType, c.A.Length).Stored;
        var b = RandomData.UploadWeight(Device, c.B, c.WType, c.B.Length).Stored;
        var (gotBuffer, gotY) = Run(c, c.X, c.Y, c.TokenSlots);
        var buffer = LoraReference.Shrink(c.X, a, c.TokenSlots, c.Slots, c.Rank, c.In);
        // Expand from the buffer the device computed, so each check sees only its own op's rounding.
        var y = LoraReference.Expand(c.Y, gotBuffer, b, c.TokenSlots, c.Slots, c.Rank, c.Out);
        Tolerance.AssertClose(gotBuffer, buffer, 1e-6 * c.In, 1e-5, $"{c.WType} shrink rank {c.Rank} in {c.In}");
        Tolerance.AssertClose(gotY, y, 1e-6 * c.Rank, 1e-5, $"{c.WType} expand rank {c.Rank} out {c.Out}");
    }

    [Property(MaxTest = 20)]
    public void A_token_gets_the_same_bits_alone_and_in_a_mixed_batch(int seed)
    {
        var c = NewCase(seed);
        int me = new Random(seed).Next(c.Tokens);
        var (batchBuffer, batchY) = Run(c, c.X, c.Y, c.TokenSlots);
        var (aloneBuffer, aloneY) = Run(c, c.X.AsSpan(me * c.In, c.In).ToArray(), c.Y.AsSpan(me * c.Out, c.Out).ToArray(), [c.TokenSlots[me]]);
        Assert.Equal(aloneBuffer, batchBuffer.AsSpan(me * c.Rank, c.Rank).ToArray());
        Assert.Equal(aloneY, batchY.AsSpan(me * c.Out, c.Out).ToArray());
    }
}
