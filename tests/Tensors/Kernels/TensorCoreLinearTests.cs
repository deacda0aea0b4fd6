using LoraEngine.Tensors.Kernels;
using LoraEngine.Tensors.Reference;
using LoraEngine.TestSupport;
using Xunit;

namespace LoraEngine.Tensors.Tests.Kernels;

/// <summary>
/// The tensor-core linear's own logic — k slices (one group per slice for up to 32 tokens, the last adding them; the
/// group adding its own beyond), the pipelined chunk loads, the merged launch of up to three linears, the fragment
/// layout — on ILGPU's CPU accelerator, where its MMAs are emulated by warp shuffles, and on the configured device
/// when it is a GPU (the real instruction). Shapes small enough for the emulation, long enough in k to be sliced.
/// </summary>
public class TensorCoreLinearTests
{
    static IEnumerable<ComputeDevice> Devices => TestDevices.ConfiguredIsGpu ? [TestDevices.Cpu, TestDevices.Configured] : [TestDevices.Cpu];

    [Fact]
    public void Sliced_and_unsliced_sums_are_the_same_bits_alone_or_in_a_batch_and_close_to_the_double_reference()
    {
        const int k = 1032, probe = 5; // 33 chunks of 32: two slices; the last chunk partly past k
        int[] outs = [16, 5];
        var rnd = new RandomData(17);
        int tokens = TestDevices.ConfiguredIsGpu ? 40 : 8;
        var x = rnd.Floats((tokens + probe) * k);
        var w = outs.Select(n => rnd.Floats(n * k)).ToArray();
        foreach (var device in Devices)
        {
            // On the CPU accelerator (emulated MMAs, slow) three tokens; on a GPU also 40 (two token groups, four tiles).
            int many = device.Kind == DeviceKind.Cpu ? 3 : tokens;
            var linear = TensorCoreLinear.Create(device);
            var weights = outs.Select((n, i) => RandomData.UploadWeight(device, w[i], DType.BF16, n, k)).ToArray();
            try
            {
                float[][] Run(int from, int count, bool sliced)
                {
                    using var xs = device.Upload(x.AsSpan(from * k, count * k), count, k);
                    var ys = outs.Select(n => device.Allocate(DType.F32, count, n)).ToArray();
                    try
                    {
                        linear.Launch(xs, ys.Zip(weights, (y, wt) => (y, wt.Tensor)).ToArray(), sliced);
                        return ys.Select(y => y.ToArray<float>()).ToArray();
                    }
                    finally
                    {
                        foreach (var y in ys) y.Dispose();
                    }
                }
                var whole = Run(probe - 1, many, sliced: false);
                var one = Run(probe, 1, sliced: true);
                var slicedFew = many <= 32 ? Run(probe - 1, many, sliced: true) : whole;
                for (int i = 0; i < outs.Length; i++)
                {
                    int n = outs[i];
                    Assert.Equal(whole[i], slicedFew[i]);
                    Assert.Equal(whole[i].AsSpan(n, n).ToArray(), one[i]);
                    // Products of magnitude ≤ 1 over 1032 terms: sums of ~±30, the three-part split and F32 sums well under 1e-3.
                    var expected = MatMulReference.Linear(x.AsSpan((probe - 1) * k, many * k), weights[i].Stored, many, k, n);
                    Tolerance.AssertClose(whole[i], expected, 1e-3, 1e-4, $"{device} {n}x{k}");
                }
                // Launched again: the slice counters were left at zero for the next launch.
                Assert.Equal(one[0], Run(probe, 1, sliced: true)[0]);
            }
            finally
            {
                linear.Dispose();
                foreach (var (t, _) in weights) t.Dispose();
            }
        }
    }
}
