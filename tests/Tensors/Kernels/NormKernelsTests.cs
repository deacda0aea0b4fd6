using FsCheck.Xunit;
using LoraEngine.Tensors;
using LoraEngine.Tensors.Reference;
using LoraEngine.TestSupport;
using Xunit;

namespace LoraEngine.Tensors.Tests.Kernels;

public class NormKernelsTests
{
    internal static float[] Run(ComputeDevice device, float[] x, float[] w, DType wType, int tokens, int dim, float eps)
    {
        using var xt = device.Upload(x, tokens, dim);
        using var yt = device.Allocate(DType.F32, tokens, dim);
        var (wt, _) = RandomData.UploadWeight(device, w, wType, dim);
        using (wt) device.Norm.RmsNorm(yt, xt, wt, eps);
        return yt.ToArray<float>();
    }

    [Property(MaxTest = 40)]
    public void RmsNorm_matches_reference_on_every_device(int seed)
    {
        var rnd = new RandomData(seed);
        int tokens = rnd.Int(1, 9), dim = rnd.Int(1, 700);
        var wType = rnd.WeightType();
        float eps = (float)Math.Pow(10, -rnd.Int(5, 6));
        var x = rnd.Floats(tokens * dim, 3f);
        var w = rnd.Floats(dim, 2f);
        var stored = RandomData.UploadWeight(TestDevices.Cpu, w, wType, dim).Stored;
        var expected = NormReference.RmsNorm(x, stored, dim, eps);
        foreach (var device in TestDevices.All)
            Tolerance.AssertClose(Run(device, x, w, wType, tokens, dim, eps), expected, 1e-5, 1e-5, $"{device} {wType}");
    }

    [Property(MaxTest = 10)]
    public void RmsNorm_configured_device_equals_cpu_accelerator(int seed)
    {
        var rnd = new RandomData(seed);
        int tokens = rnd.Int(1, 17), dim = rnd.Int(1, 2100);
        var wType = rnd.WeightType();
        var x = rnd.Floats(tokens * dim);
        var w = rnd.Floats(dim);
        var gpu = Run(TestDevices.Configured, x, w, wType, tokens, dim, 1e-5f);
        var cpu = Run(TestDevices.Cpu, x, w, wType, tokens, dim, 1e-5f);
        Tolerance.AssertClose(gpu, cpu, 1e-6, 1e-5, wType.ToString());
    }

    [Property(MaxTest = 20)]
    public void AddRmsNorm_adds_the_residual_then_matches_the_reference_on_every_device(int seed)
    {
        var rnd = new RandomData(seed);
        int tokens = rnd.Int(1, 9), dim = rnd.Int(1, 700);
        CheckAddRmsNorm(rnd, tokens, dim);
    }

    /// <summary>Rows wider than the 1024-thread group: two elements a thread (kept in registers), then more (read again).</summary>
    [Theory]
    [InlineData(1500)]
    [InlineData(2048)]
    [InlineData(3001)]
    public void AddRmsNorm_of_wide_rows_matches_the_reference_on_every_device(int dim) => CheckAddRmsNorm(new RandomData(dim), 3, dim);

    static void CheckAddRmsNorm(RandomData rnd, int tokens, int dim)
    {
        var wType = rnd.WeightType();
        var x = rnd.Floats(tokens * dim, 3f);
        var delta = rnd.Floats(tokens * dim, 3f);
        var w = rnd.Floats(dim, 2f);
        var sum = x.Zip(delta, (a, b) => a + b).ToArray();
        var stored = RandomData.UploadWeight(TestDevices.Cpu, w, wType, dim).Stored;
        var expected = NormReference.RmsNorm(sum, stored, dim, 1e-5f);
        foreach (var device in TestDevices.All)
        {
            using var xt = device.Upload(x, tokens, dim);
            using var dt = device.Upload(delta, tokens, dim);
            using var yt = device.Allocate(DType.F32, tokens, dim);
            var (wt, _) = RandomData.UploadWeight(device, w, wType, dim);
            using (wt) device.Norm.AddRmsNorm(yt, xt, dt, wt, 1e-5f);
            Assert.Equal(sum, xt.ToArray<float>());
            Tolerance.AssertClose(yt.ToArray<float>(), expected, 1e-5, 1e-5, $"{device} {wType}");
        }
    }

    [Fact]
    public void RmsNorm_rejects_bad_arguments()
    {
        var d = TestDevices.Cpu;
        using var x = d.Zeros(DType.F32, 2, 8);
        using var y = d.Zeros(DType.F32, 2, 8);
        using var w = d.Zeros(DType.F32, 8);
        using var wrongW = d.Zeros(DType.F32, 7);
        using var ids = d.Zeros(DType.I32, 2, 8);
        Assert.Equal("weight", Assert.Throws<ArgumentException>(() => d.Norm.RmsNorm(y, x, wrongW, 1e-5f)).ParamName);
        Assert.Equal("x", Assert.Throws<ArgumentException>(() => d.Norm.RmsNorm(y, ids, w, 1e-5f)).ParamName);
        Assert.Equal("weight", Assert.Throws<ArgumentException>(() => d.Norm.RmsNorm(y, x, ids, 1e-5f)).ParamName);
        Assert.Equal("eps", Assert.Throws<ArgumentOutOfRangeException>(() => d.Norm.RmsNorm(y, x, w, 0f)).ParamName);
    }
}
