using FsCheck.Xunit;
using LoraEngine.Tensors.Reference;
using LoraEngine.TestSupport;
using Xunit;

namespace LoraEngine.Tensors.Tests.Kernels;

public class ElementwiseKernelsTests
{
    [Property(MaxTest = 20)]
    public void Add_swiglu_and_embedding_match_reference_on_every_device(int seed)
    {
        var rnd = new RandomData(seed);
        int tokens = rnd.Int(1, 9), dim = rnd.Int(1, 300), vocab = rnd.Int(1, 50);
        var a = rnd.Floats(tokens * dim, 6f);
        var b = rnd.Floats(tokens * dim, 6f);
        var table = rnd.Floats(vocab * dim);
        var ids = rnd.Ints(tokens, -2, vocab + 2); // out-of-range ids give zero rows
        var wType = rnd.WeightType();
        var storedTable = RandomData.UploadWeight(TestDevices.CpuFast, table, wType, vocab, dim).Stored;
        foreach (var device in TestDevices.All)
        {
            using var x = device.Upload(a, tokens, dim);
            using var y = device.Upload(b, tokens, dim);
            using var o = device.Allocate(DType.F32, tokens, dim);
            device.Elementwise.SwiGlu(o, x, y);
            Tolerance.AssertClose(o.ToArray<float>(), ElementwiseReference.SwiGlu(a, b), 1e-6, 1e-5, $"{device} swiglu");
            device.Elementwise.AddInPlace(x, y);
            Tolerance.AssertClose(x.ToArray<float>(), ElementwiseReference.Add(a, b), 0, 0, $"{device} add");
            using var idt = device.Upload(ids, tokens);
            var (tt, _) = RandomData.UploadWeight(device, table, wType, vocab, dim);
            using (tt) device.Elementwise.Embedding(o, idt, tt);
            Assert.Equal(ElementwiseReference.Embedding(ids, storedTable, dim), o.ToArray<float>());
        }
    }

    [Property(MaxTest = 8)]
    public void Configured_device_equals_the_cpu_accelerator(int seed)
    {
        var rnd = new RandomData(seed);
        int n = rnd.Int(1, 3000);
        var g = rnd.Floats(n, 10f);
        var u = rnd.Floats(n);
        float[] Run(ComputeDevice d)
        {
            using var gt = d.Upload(g, 1, n);
            using var ut = d.Upload(u, 1, n);
            d.Elementwise.SwiGlu(gt, gt, ut);
            return gt.ToArray<float>();
        }
        Tolerance.AssertClose(Run(TestDevices.Configured), Run(TestDevices.Cpu), 1e-6, 1e-6);
    }

    [Fact]
    public void Elementwise_ops_reject_bad_arguments()
    {
        var d = TestDevices.Cpu;
        using var x = d.Zeros(DType.F32, 2, 8);
        using var y = d.Zeros(DType.F32, 2, 7);
        using var ids = d.Zeros(DType.I32, 2);
        using var table = d.Zeros(DType.I32, 4, 8);
        Assert.Equal("y", Assert.Throws<ArgumentException>(() => d.Elementwise.AddInPlace(x, y)).ParamName);
        Assert.Equal("up", Assert.Throws<ArgumentException>(() => d.Elementwise.SwiGlu(x, x, y)).ParamName);
        Assert.Equal("table", Assert.Throws<ArgumentException>(() => d.Elementwise.Embedding(x, ids, table)).ParamName);
        Assert.Equal("ids", Assert.Throws<ArgumentException>(() => d.Elementwise.Embedding(x, x, x)).ParamName);
    }
}
