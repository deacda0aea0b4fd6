using FsCheck.Xunit;
using LoraEngine.TestSupport;
using Xunit;

namespace LoraEngine.Tensors.Tests.Kernels;

/// <summary>
/// OpenCL's code path without an OpenCL device: the kernels with their warps drawn on the group (<c>GroupLanes</c>,
/// every exchange through shared memory between group barriers) on ILGPU's CPU accelerator, against the same kernels
/// with the accelerator's warps. The warp butterflies give the same bits; the group sums (softmax and logprob
/// normalisers) add in another fixed order, so those agree to rounding.
/// </summary>
public class GroupLanesTests
{
    static readonly Lazy<ComputeDevice> s_groupLanes = new(ComputeDevice.CreateCpuKernelsWithGroupLanes);

    static ComputeDevice GroupLanes => s_groupLanes.Value;

    [Property(MaxTest = 3)]
    public void Decode_linears_norms_and_lora_give_the_same_bits(int seed)
    {
        var rnd = new RandomData(seed);
        int tokens = rnd.Int(1, 8), inF = rnd.Int(1, 70), outF = rnd.Int(1, 40); // ≤ 8 tokens: the GEMV kernels
        var wType = rnd.WeightType();
        var x = rnd.Floats(tokens * inF);
        var w = rnd.Floats(outF * inF);
        Assert.Equal(MatMulKernelsTests.Run(TestDevices.Cpu, x, w, wType, tokens, inF, outF), MatMulKernelsTests.Run(GroupLanes, x, w, wType, tokens, inF, outF));

        int dim = rnd.Int(1, 1500);
        var rows = rnd.Floats(tokens * dim, 3f);
        var gains = rnd.Floats(dim, 2f);
        Assert.Equal(NormKernelsTests.Run(TestDevices.Cpu, rows, gains, wType, tokens, dim, 1e-5f), NormKernelsTests.Run(GroupLanes, rows, gains, wType, tokens, dim, 1e-5f));

        var lora = LoraKernelsTests.NewCase(seed);
        var (buffer, y) = LoraKernelsTests.Run(TestDevices.Cpu, lora);
        var (groupBuffer, groupY) = LoraKernelsTests.Run(GroupLanes, lora);
        Assert.Equal(buffer, groupBuffer);
        Assert.Equal(y, groupY);
    }

    [Property(MaxTest = 3)]
    public void Attention_gives_the_same_bits(int seed)
    {
        var c = AttentionKernelsTests.NewCase(seed, maxLength: 48);
        Assert.Equal(AttentionKernelsTests.Run(TestDevices.Cpu, c), AttentionKernelsTests.Run(GroupLanes, c));
    }

    [Property(MaxTest = 4)]
    public void Sampling_gives_the_same_tokens_ranks_and_top_ids(int seed)
    {
        var c = SampleKernelsTests.NewCase(seed, maxRows: 3, maxVocab: 600);
        var (expected, _) = SampleKernelsTests.Run(TestDevices.Cpu, c.Vocab, c.Logits, c.Rows, c.Edits);
        var (actual, _) = SampleKernelsTests.Run(GroupLanes, c.Vocab, c.Logits, c.Rows, c.Edits);
        for (int r = 0; r < c.Rows.Length; r++)
        {
            var (e, a) = (expected[r], actual[r]);
            Assert.Equal((e.Token, e.Finite, e.Rank), (a.Token, a.Finite, a.Rank));
            Assert.Equal(e.TopIds, a.TopIds);
            Tolerance.AssertClose([a.Logprob, .. a.TopLogprobs], [e.Logprob, .. e.TopLogprobs], 1e-6, 1e-6, $"row {r}");
        }
    }
}
