using LoraEngine.Models.Llama;
using LoraEngine.Models.Safetensors;
using LoraEngine.Tensors;
using LoraEngine.TestSupport;
using Xunit;

namespace LoraEngine.Models.Tests.Llama;

/// <summary>
/// The Llama forward pass against the transformers goldens (computed in float64): logits at every prompt
/// position within 1e-4 relative error, greedy continuations exact. On the configured device (kernels only)
/// and on the CPU device's vectorised host paths.
/// </summary>
public class LlamaGoldenTests
{

    static void CheckModel(string modelName, string goldenName, int greedyTokens)
    {
        foreach (var d in TestDevices.ForModels) CheckModel(d, modelName, goldenName, greedyTokens);
    }

    static void CheckModel(ComputeDevice d, string modelName, string goldenName, int greedyTokens)
    {
        using var model = LlamaModel.Load(d, Fixtures.Model(modelName));
        using var golden = SafetensorsFile.Open(Fixtures.Golden(goldenName + ".safetensors"));
        using var runner = new SequenceRunner(model);
        int vocab = model.Config.VocabSize;
        for (int i = 0; i < GoldenFiles.PromptCount(goldenName + ".json"); i++)
        {
            var ids = GoldenFiles.PromptIds(golden, i);
            GoldenFiles.AssertLogitsMatch(runner.PromptLogits(ids), golden.ReadFloats($"base.prompt{i}.logits"), vocab, 1e-4, $"{modelName} on {d} prompt {i}");
            var expected = golden.ReadInt64($"base.prompt{i}.greedy").Select(v => (int)v).ToArray();
            Assert.Equal(expected, runner.Greedy(ids, expected.Length));
            Assert.Equal(greedyTokens, expected.Length);
        }
    }

    [Fact]
    public void F32_model_matches_goldens() => CheckModel("vim-tiny", "vim-tiny", 24);

    [Fact]
    public void BF16_model_matches_its_goldens() => CheckModel("vim-tiny-bf16", "vim-tiny-bf16", 16);

    [Fact]
    public void BF16_weights_stay_BF16_on_the_device_unless_asked()
    {
        using var kept = LlamaModel.Load(TestDevices.CpuFast, Fixtures.Model("vim-tiny-bf16"));
        Assert.Equal(DType.BF16, kept.WeightDType);
        using var widened = LlamaModel.Load(TestDevices.CpuFast, Fixtures.Model("vim-tiny-bf16"), DType.F32);
        Assert.Equal(DType.F32, widened.WeightDType);
        Assert.Equal(kept.WeightBytes * 2, widened.WeightBytes);
    }

    [Fact]
    public void Loading_streams_weights_from_the_map_without_a_host_copy()
    {
        // Weights kept in their stored dtype go straight from the memory map to the device: the managed heap grows by
        // far less than the model (converted weights go through a bounded 1M-element chunk buffer).
        var d = TestDevices.CpuFast;
        long before = GC.GetAllocatedBytesForCurrentThread();
        using var model = LlamaModel.Load(d, Fixtures.Model("vim-tiny-bf16"));
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.True(allocated < model.WeightBytes / 4, $"loading allocated {allocated} bytes for {model.WeightBytes} bytes of weights");
    }

    [Fact]
    public void Sharded_classic_layout_gives_the_same_logits_bit_for_bit()
    {
        var d = TestDevices.CpuFast;
        using var single = LlamaModel.Load(d, Fixtures.Model("vim-tiny"));
        using var sharded = LlamaModel.Load(d, Fixtures.Model("vim-tiny-sharded"));
        using var golden = SafetensorsFile.Open(Fixtures.Golden("vim-tiny.safetensors"));
        using var a = new SequenceRunner(single);
        using var b = new SequenceRunner(sharded);
        for (int i = 0; i < 5; i++)
        {
            var ids = GoldenFiles.PromptIds(golden, i);
            Assert.Equal(a.PromptLogits(ids), b.PromptLogits(ids));
        }
    }

    [Fact]
    public void Several_sequences_in_one_step_match_each_alone()
    {
        var d = TestDevices.ForModel;
        using var model = LlamaModel.Load(d, Fixtures.Model("vim-tiny"));
        using var golden = SafetensorsFile.Open(Fixtures.Golden("vim-tiny.safetensors"));
        using var runner = new SequenceRunner(model);
        int vocab = model.Config.VocabSize;
        var prompts = Enumerable.Range(0, 4).Select(i => GoldenFiles.PromptIds(golden, i)).ToArray();
        // Two chunks per sequence: the second chunk attends to the first through the paged cache (chunked prefill).
        var firstHalf = prompts.Select(p => p[..(p.Length / 2)]).ToArray();
        var secondHalf = prompts.Select(p => p[(p.Length / 2)..]).ToArray();
        runner.Step(firstHalf, [0, 0, 0, 0]);
        var mixed = runner.Step(secondHalf, firstHalf.Select(h => h.Length).ToArray());
        int row = 0;
        for (int i = 0; i < 4; i++)
        {
            var expected = golden.ReadFloats($"base.prompt{i}.logits");
            for (int p = firstHalf[i].Length; p < prompts[i].Length; p++, row++)
                Tolerance.AssertRelative(mixed.AsSpan(row * vocab, vocab), expected.AsSpan(p * vocab, vocab), 1e-4, $"prompt {i} position {p}");
        }
    }
}
