using FsCheck.Xunit;
using LoraEngine.Tensors.Reference;
using LoraEngine.TestSupport;
using Xunit;

namespace LoraEngine.Tensors.Tests.Kernels;

public class SamplingKernelsTests
{
    static float[] Logits(RandomData rnd, int rows, int vocab)
    {
        var x = rnd.Floats(rows * vocab, 8f);
        // Ties: copy a few values so the lowest-index rule is exercised.
        for (int i = 0; i + 3 < x.Length; i += 7) x[i + 3] = x[i];
        return x;
    }

    [Property(MaxTest = 20)]
    public void Softmax_and_log_softmax_match_reference_on_every_device(int seed)
    {
        var rnd = new RandomData(seed);
        int rows = rnd.Int(1, 4), vocab = rnd.Int(1, 700);
        var x = Logits(rnd, rows, vocab);
        foreach (var device in TestDevices.All)
            foreach (bool log in new[] { false, true })
            {
                using var xt = device.Upload(x, rows, vocab);
                using var yt = device.Allocate(DType.F32, rows, vocab);
                if (log) device.Sampling.LogSoftmax(yt, xt);
                else device.Sampling.Softmax(yt, xt);
                Tolerance.AssertClose(yt.ToArray<float>(), SamplingReference.Softmax(x, vocab, log), 1e-6, 1e-5, $"{device} log={log}");
            }
    }

    [Property(MaxTest = 20)]
    public void TopK_and_argmax_match_reference_on_every_device(int seed)
    {
        var rnd = new RandomData(seed);
        int rows = rnd.Int(1, 4), vocab = rnd.Int(1, 600), k = rnd.Int(1, Math.Min(vocab, 20));
        var x = Logits(rnd, rows, vocab);
        var expected = SamplingReference.TopK(x, vocab, k);
        foreach (var device in TestDevices.All)
        {
            using var xt = device.Upload(x, rows, vocab);
            using var values = device.Allocate(DType.F32, rows, k);
            using var indices = device.Allocate(DType.I32, rows, k);
            device.Sampling.TopK(values, indices, xt, k);
            Assert.Equal(expected, indices.ToArray<int>());
            Assert.Equal(expected.Select((id, j) => x[j / k * vocab + id]).ToArray(), values.ToArray<float>());
            using var argmax = device.Allocate(DType.I32, rows);
            device.Sampling.Argmax(argmax, xt);
            Assert.Equal(SamplingReference.TopK(x, vocab, 1), argmax.ToArray<int>());
        }
    }

    [Property(MaxTest = 8)]
    public void Configured_device_equals_the_cpu_accelerator(int seed)
    {
        var rnd = new RandomData(seed);
        int rows = rnd.Int(1, 3), vocab = rnd.Int(2, 2000);
        var x = Logits(rnd, rows, vocab);
        float[] Run(ComputeDevice d)
        {
            using var xt = d.Upload(x, rows, vocab);
            using var yt = d.Allocate(DType.F32, rows, vocab);
            d.Sampling.LogSoftmax(yt, xt);
            return yt.ToArray<float>();
        }
        Tolerance.AssertClose(Run(TestDevices.Configured), Run(TestDevices.Cpu), 1e-6, 1e-6);
    }

    [Fact]
    public void Sampling_ops_reject_bad_arguments()
    {
        var d = TestDevices.Cpu;
        using var x = d.Zeros(DType.F32, 2, 10);
        using var v = d.Zeros(DType.F32, 2, 3);
        using var i = d.Zeros(DType.I32, 2, 3);
        using var wrong = d.Zeros(DType.F32, 2, 9);
        Assert.Equal("k", Assert.Throws<ArgumentOutOfRangeException>(() => d.Sampling.TopK(v, i, x, 11)).ParamName);
        Assert.Equal("indices", Assert.Throws<ArgumentException>(() => d.Sampling.TopK(v, v, x, 3)).ParamName);
        Assert.Equal("y", Assert.Throws<ArgumentException>(() => d.Sampling.Softmax(wrong, x)).ParamName);
        Assert.Equal("indices", Assert.Throws<ArgumentException>(() => d.Sampling.Argmax(v, x)).ParamName);
    }
}
