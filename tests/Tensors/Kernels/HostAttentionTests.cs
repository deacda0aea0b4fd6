using FsCheck.Xunit;
using LoraEngine.Tensors.Reference;
using LoraEngine.TestSupport;
using Xunit;

namespace LoraEngine.Tensors.Tests.Kernels;

/// <summary>The CPU device's paged attention on longer sequences than the kernel properties use (many blocks, prefill chunks).</summary>
public class HostAttentionTests
{
    [Property(MaxTest = 20)]
    public void Paged_attention_on_long_sequences_matches_the_reference(int seed)
    {
        var c = AttentionKernelsTests.NewCase(seed, maxLength: 300);
        var expected = AttentionReference.Attend(c.Q, c.Keys, c.Values, c.TokenSeq, c.TokenPos, c.Heads, c.KvHeads, c.HeadDim, 1 / Math.Sqrt(c.HeadDim));
        Tolerance.AssertClose(AttentionKernelsTests.Run(TestDevices.CpuFast, c), expected, 1e-5, 1e-5, $"heads {c.Heads}/{c.KvHeads} dim {c.HeadDim} block {c.BlockSize}");
    }

    [Property(MaxTest = 10)]
    public void A_token_gets_the_same_bits_alone_and_in_the_batch(int seed)
    {
        var c = AttentionKernelsTests.NewCase(seed, maxLength: 100);
        var batch = AttentionKernelsTests.Run(TestDevices.CpuFast, c);
        int me = new Random(seed).Next(c.TokenSeq.Length), width = c.Heads * c.HeadDim;
        var alone = AttentionKernelsTests.Run(TestDevices.CpuFast, c with
        {
            TokenSeq = [c.TokenSeq[me]],
            TokenPos = [c.TokenPos[me]],
            Q = c.Q.AsSpan(me * width, width).ToArray(),
        });
        Assert.Equal(alone, batch.AsSpan(me * width, width).ToArray());
    }
}
