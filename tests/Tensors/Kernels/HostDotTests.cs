using System.Runtime.Intrinsics;
using FsCheck.Xunit;
using LoraEngine.Tensors.Kernels;
using LoraEngine.TestSupport;
using Xunit;

namespace LoraEngine.Tensors.Tests.Kernels;

public class HostDotTests
{
    [Property(MaxTest = 50)]
    public unsafe void Reduce16_gives_the_bits_of_sixteen_separate_reductions(int seed)
    {
        var rnd = new RandomData(seed);
        // Magnitudes spread over many binades so that the order of the additions shows in the last bits.
        var values = rnd.Floats(256).Select((v, i) => v * MathF.Pow(2, i % 23 - 11)).ToArray();
        var acc = stackalloc Vector512<float>[16];
        var pointers = stackalloc Vector512<float>*[16];
        for (int i = 0; i < 16; i++)
        {
            acc[i] = Vector512.Create(values.AsSpan(16 * i, 16));
            pointers[i] = acc + i;
        }
        var sums = HostDot.Reduce16(pointers);
        for (int i = 0; i < 16; i++) Assert.Equal(HostDot.Reduce(acc[i]), sums[i]);
    }

    [Fact]
    public void Reduce_sums_as_a_halving_tree()
    {
        var v = Vector512.Create(1e8f, 1, 2, 3, 4, 5, 6, 7, -1e8f, 9, 10, 11, 12, 13, 14, 15);
        // s8[0] = 1e8 + (−1e8) = 0 exactly, so nothing of the small lanes is lost: the sum is exact.
        Assert.Equal(1 + 2 + 3 + 4 + 5 + 6 + 7 + 9 + 10 + 11 + 12 + 13 + 14 + 15, HostDot.Reduce(v));
    }
}
