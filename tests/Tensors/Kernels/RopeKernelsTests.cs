using FsCheck.Xunit;
using LoraEngine.Tensors.Kernels;
using LoraEngine.Tensors.Reference;
using LoraEngine.TestSupport;
using Xunit;

namespace LoraEngine.Tensors.Tests.Kernels;

public class RopeKernelsTests
{
    static float[] Run(ComputeDevice device, float[] x, int[] positions, float[] invFreq, int tokens, int width, int headDim)
    {
        using var xt = device.Upload(x, tokens, width);
        using var pos = device.Upload(positions, tokens);
        using var inv = device.Upload(invFreq, headDim / 2);
        device.Rope.Apply(xt, pos, inv, headDim);
        return xt.ToArray<float>();
    }

    static (float[] X, int[] Pos, float[] Inv, int Tokens, int Width, int HeadDim) NewCase(int seed)
    {
        var rnd = new RandomData(seed);
        int headDim = 2 * rnd.Int(1, 40), heads = rnd.Int(1, 5), tokens = rnd.Int(1, 10);
        var scaling = rnd.Int(0, 1) == 0 ? null : new Llama3RopeScaling(8, 1, 4, 64);
        var inv = RopeFrequencies.InverseFrequencies(headDim, rnd.Int(0, 1) == 0 ? 10000 : 500000, scaling);
        return (rnd.Floats(tokens * heads * headDim), rnd.Ints(tokens, 0, 4096), inv, tokens, heads * headDim, headDim);
    }

    [Property(MaxTest = 25)]
    public void Rope_matches_reference_on_every_device(int seed)
    {
        var c = NewCase(seed);
        var expected = RopeReference.Apply(c.X, c.Pos, c.Inv, c.Width, c.HeadDim);
        foreach (var device in TestDevices.All)
            Tolerance.AssertClose(Run(device, c.X, c.Pos, c.Inv, c.Tokens, c.Width, c.HeadDim), expected, 2e-6, 1e-5, device.ToString());
    }

    [Property(MaxTest = 10)]
    public void Configured_device_equals_the_cpu_accelerator(int seed)
    {
        var c = NewCase(seed);
        Tolerance.AssertClose(Run(TestDevices.Configured, c.X, c.Pos, c.Inv, c.Tokens, c.Width, c.HeadDim),
            Run(TestDevices.Cpu, c.X, c.Pos, c.Inv, c.Tokens, c.Width, c.HeadDim), 2e-6, 1e-5);
    }

    [Property(MaxTest = 20)]
    public void Cached_rope_of_q_and_k_matches_reference_on_every_device(int seed)
    {
        var c = NewCase(seed);
        var rnd = new RandomData(seed + 1);
        int kWidth = c.HeadDim * rnd.Int(1, 3);
        var k = rnd.Floats(c.Tokens * kWidth);
        var table = RopeOps.CosSinTable(c.Inv, 4096);
        var expectedQ = RopeReference.Apply(c.X, c.Pos, c.Inv, c.Width, c.HeadDim);
        var expectedK = RopeReference.Apply(k, c.Pos, c.Inv, kWidth, c.HeadDim);
        foreach (var device in TestDevices.All)
        {
            using var qt = device.Upload(c.X, c.Tokens, c.Width);
            using var kt = device.Upload(k, c.Tokens, kWidth);
            using var pos = device.Upload(c.Pos, c.Tokens);
            using var cs = device.Upload(table, 4096, c.HeadDim / 2, 2);
            device.Rope.ApplyCached(qt, kt, pos, cs, c.HeadDim);
            Tolerance.AssertClose(qt.ToArray<float>(), expectedQ, 2e-6, 1e-5, device.ToString());
            Tolerance.AssertClose(kt.ToArray<float>(), expectedK, 2e-6, 1e-5, device.ToString());
        }
    }

    [Fact]
    public void Rope_rejects_bad_arguments()
    {
        var d = TestDevices.Cpu;
        using var x = d.Zeros(DType.F32, 2, 12);
        using var pos = d.Zeros(DType.I32, 2);
        using var inv = d.Zeros(DType.F32, 3);
        using var wrongPos = d.Zeros(DType.I32, 3);
        Assert.Equal("headDim", Assert.Throws<ArgumentOutOfRangeException>(() => d.Rope.Apply(x, pos, inv, 5)).ParamName);
        Assert.Equal("x", Assert.Throws<ArgumentException>(() => d.Rope.Apply(x, pos, inv, 8)).ParamName);
        Assert.Equal("positions", Assert.Throws<ArgumentException>(() => d.Rope.Apply(x, wrongPos, inv, 6)).ParamName);
        Assert.Equal("invFreq", Assert.Throws<ArgumentException>(() => d.Rope.Apply(x, pos, inv, 4)).ParamName);
    }
}
