using FsCheck.Xunit;
using LoraEngine.Tensors.Reference;
using LoraEngine.TestSupport;
using Xunit;

namespace LoraEngine.Tensors.Tests.Kernels;

public class LoraKernelsTests
{
    sealed record Case(int Tokens, int In, int Out, int Slots, int Rank, DType WType, float[] X, float[] Y, float[] A, float[] B, int[] TokenSlots);

    static Case NewCase(int seed)
    {
        var rnd = new RandomData(seed);
        int tokens = rnd.Int(1, 12), inF = rnd.Int(1, 50), outF = rnd.Int(1, 50), slots = rnd.Int(1, 3), rank = rnd.Int(1, 9);
        // Slots −1 (no adapter) and out of range (must be skipped, never read) mixed in.
        var tokenSlots = Enumerable.Range(0, tokens).Select(_ => rnd.Int(-1, slots)).ToArray();
        return new Case(tokens, inF, outF, slots, rank, rnd.WeightType(), rnd.Floats(tokens * inF), rnd.Floats(tokens * outF),
            rnd.Floats(slots * rank * inF), rnd.Floats(slots * outF * rank), tokenSlots);
    }

    static (float[] Buffer, float[] Y) Run(ComputeDevice device, Case c)
    {
        using var x = device.Upload(c.X, c.Tokens, c.In);
        using var y = device.Upload(c.Y, c.Tokens, c.Out);
        using var slots = device.Upload(c.TokenSlots, c.Tokens);
        using var buffer = device.Allocate(DType.F32, c.Tokens, c.Rank);
        var (a, _) = RandomData.UploadWeight(device, c.A, c.WType, c.Slots, c.Rank, c.In);
        var (b, _) = RandomData.UploadWeight(device, c.B, c.WType, c.Slots, c.Out, c.Rank);
        using (a)
        using (b)
        {
            device.Lora.Shrink(buffer, x, a, slots);
            device.Lora.Expand(y, buffer, b, slots);
        }
        return (buffer.ToArray<float>(), y.ToArray<float>());
    }

    [Property(MaxTest = 20)]
    public void Shrink_and_expand_match_reference_on_every_device(int seed)
    {
        var c = NewCase(seed);
        var a = RandomData.UploadWeight(TestDevices.CpuFast, c.A, c.WType, c.A.Length).Stored;
        var b = RandomData.UploadWeight(TestDevices.CpuFast, c.B, c.WType, c.B.Length).Stored;
        var buffer = LoraReference.Shrink(c.X, a, c.TokenSlots, c.Slots, c.Rank, c.In);
        var y = LoraReference.Expand(c.Y, buffer, b, c.TokenSlots, c.Slots, c.Rank, c.Out);
        foreach (var device in TestDevices.All)
        {
            var (gotBuffer, gotY) = Run(device, c);
            Tolerance.AssertClose(gotBuffer, buffer, 2e-5, 1e-5, $"{device} shrink");
            Tolerance.AssertClose(gotY, y, 5e-5, 1e-5, $"{device} expand");
        }
    }

    [Property(MaxTest = 8)]
    public void Configured_device_equals_the_cpu_accelerator(int seed)
    {
        var c = NewCase(seed);
        var (gb, gy) = Run(TestDevices.Configured, c);
        var (cb, cy) = Run(TestDevices.Cpu, c);
        Tolerance.AssertClose(gb, cb, 1e-5, 1e-5);
        Tolerance.AssertClose(gy, cy, 1e-5, 1e-5);
    }

    [Fact]
    public void Tokens_without_an_adapter_are_untouched_bit_for_bit()
    {
        var rnd = new RandomData(17);
        var c = new Case(3, 10, 7, 2, 4, DType.BF16, rnd.Floats(30), rnd.Floats(21), rnd.Floats(2 * 4 * 10), rnd.Floats(2 * 7 * 4), [-1, -1, -1]);
        foreach (var device in TestDevices.All) Assert.Equal(c.Y, Run(device, c).Y);
    }

    [Property(MaxTest = 12)]
    public void Expand_into_a_column_range_adds_there_only(int seed)
    {
        var c = NewCase(seed);
        var rnd = new RandomData(seed + 1);
        int before = rnd.Int(0, 20), after = rnd.Int(0, 20), width = before + c.Out + after;
        var wide = rnd.Floats(c.Tokens * width);
        var b = RandomData.UploadWeight(TestDevices.CpuFast, c.B, c.WType, c.B.Length).Stored;
        var buffer = rnd.Floats(c.Tokens * c.Rank);
        // The reference on the range's columns alone; every other column keeps its value.
        var range = Enumerable.Range(0, c.Tokens).SelectMany(t => wide.AsSpan(t * width + before, c.Out).ToArray()).ToArray();
        var expanded = LoraReference.Expand(range, buffer, b, c.TokenSlots, c.Slots, c.Rank, c.Out);
        var expected = (float[])wide.Clone();
        for (int t = 0; t < c.Tokens; t++) expanded.AsSpan(t * c.Out, c.Out).CopyTo(expected.AsSpan(t * width + before));
        foreach (var device in TestDevices.All)
        {
            using var y = device.Upload(wide, c.Tokens, width);
            using var bufferT = device.Upload(buffer, c.Tokens, c.Rank);
            using var slots = device.Upload(c.TokenSlots, c.Tokens);
            using var bt = RandomData.UploadWeight(device, c.B, c.WType, c.Slots, c.Out, c.Rank).Tensor;
            device.Lora.Expand(y, bufferT, bt, slots, outputOffset: before);
            var got = y.ToArray<float>();
            Tolerance.AssertClose(got, expected, 5e-5, 1e-5, $"{device} expand at column {before} of {width}");
            for (int t = 0; t < c.Tokens; t++)
            {
                Assert.Equal(wide.AsSpan(t * width, before).ToArray(), got.AsSpan(t * width, before).ToArray());
                Assert.Equal(wide.AsSpan(t * width + before + c.Out, after).ToArray(), got.AsSpan(t * width + before + c.Out, after).ToArray());
            }
        }
    }

    [Fact]
    public void Shrink_and_expand_reject_bad_arguments()
    {
        var d = TestDevices.Cpu;
        using var x = d.Zeros(DType.F32, 2, 8);
        using var a = d.Zeros(DType.F32, 3, 4, 8);
        using var b = d.Zeros(DType.F32, 3, 6, 4);
        using var buffer = d.Zeros(DType.F32, 2, 4);
        using var y = d.Zeros(DType.F32, 2, 6);
        using var slots = d.Zeros(DType.I32, 2);
        using var wrongSlots = d.Zeros(DType.I32, 3);
        using var wrongA = d.Zeros(DType.F32, 3, 4, 9);
        Assert.Equal("x", Assert.Throws<ArgumentException>(() => d.Lora.Shrink(buffer, x, wrongA, slots)).ParamName);
        Assert.Equal("tokenSlots", Assert.Throws<ArgumentException>(() => d.Lora.Shrink(buffer, x, a, wrongSlots)).ParamName);
        Assert.Equal("buffer", Assert.Throws<ArgumentException>(() => d.Lora.Expand(y, x, b, slots)).ParamName);
        Assert.Equal("y", Assert.Throws<ArgumentException>(() => d.Lora.Expand(buffer, buffer, b, slots)).ParamName);
        Assert.Equal("y", Assert.Throws<ArgumentException>(() => d.Lora.Expand(y, buffer, b, slots, outputOffset: 1)).ParamName); // columns [1, 7) of 6
        Assert.Equal("outputOffset", Assert.Throws<ArgumentOutOfRangeException>(() => d.Lora.Expand(y, buffer, b, slots, outputOffset: -1)).ParamName);
    }
}
