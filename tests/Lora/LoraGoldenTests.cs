using LoraEngine.Lora;
using LoraEngine.Models.Llama;
using LoraEngine.Models.Safetensors;
using LoraEngine.Models.Tests.Llama;
using LoraEngine.Tensors;
using LoraEngine.TestSupport;
using Xunit;

namespace LoraEngine.Lora.Tests;

/// <summary>
/// The three fixture adapters against the transformers+peft goldens: logits within 1e-4 and greedy exact,
/// each alone and all three plus the base model in one batch.
/// </summary>
public sealed class LoraGoldenTests : IDisposable
{
    static readonly string[] s_cases = ["vim-upper", "vim-rot13", "vim-random-qv-r4"];
    readonly List<IDisposable> _owned = new();


    (LlamaModel Model, LoraManager Manager, LoraAdapter[] Adapters) LoadWithAdapters(ComputeDevice device, string modelName = "vim-tiny")
    {
        var model = LlamaModel.Load(device, Fixtures.Model(modelName));
        _owned.Add(model);
        var layers = LoraLayers.Wrap(model, maxSlots: 4, maxRank: 16, DType.F32, maxTokens: 128);
        _owned.Add(layers);
        var manager = new LoraManager(layers, model.Config, maxCpuLoras: 4);
        var adapters = s_cases.Select((name, i) => manager.Load(name, i + 1, Fixtures.Adapter(name))).ToArray();
        return (model, manager, adapters);
    }

    /// <summary>A context factory mapping every token of a step to one slot.</summary>
    Func<int, object?> AllTokens(ComputeDevice device, int slot) => tokens =>
    {
        var t = device.Upload(Enumerable.Repeat(slot, tokens).ToArray(), tokens);
        _owned.Add(t);
        return new LoraBatchMapping(t, slot >= 0);
    };

    [Fact]
    public void Each_adapter_alone_matches_goldens()
    {
        foreach (var device in TestDevices.ForModels) EachAdapterAlone(device);
    }

    void EachAdapterAlone(ComputeDevice device)
    {
        var (model, manager, adapters) = LoadWithAdapters(device);
        using var golden = SafetensorsFile.Open(Fixtures.Golden("vim-tiny.safetensors"));
        using var runner = new SequenceRunner(model);
        int vocab = model.Config.VocabSize;
        for (int c = 0; c < s_cases.Length; c++)
        {
            int slot = manager.ActivateForStep([adapters[c]])[adapters[c]];
            for (int i = 0; i < 5; i++)
            {
                var ids = GoldenFiles.PromptIds(golden, i);
                GoldenFiles.AssertLogitsMatch(runner.PromptLogits(ids, AllTokens(device, slot)),
                    golden.ReadFloats($"{s_cases[c]}.prompt{i}.logits"), vocab, 1e-4, $"{s_cases[c]} prompt {i}");
                var greedy = golden.ReadInt64($"{s_cases[c]}.prompt{i}.greedy").Select(v => (int)v).ToArray();
                Assert.Equal(greedy, runner.Greedy(ids, greedy.Length, AllTokens(device, slot)));
            }
        }
    }

    [Fact]
    public void All_three_adapters_and_the_base_in_one_batch_match_goldens()
    {
        var device = TestDevices.ForModel;
        var (model, manager, adapters) = LoadWithAdapters(device);
        using var golden = SafetensorsFile.Open(Fixtures.Golden("vim-tiny.safetensors"));
        using var runner = new SequenceRunner(model, maxTokens: 256);
        int vocab = model.Config.VocabSize;
        string[] cases = ["base", .. s_cases];
        var slotOf = manager.ActivateForStep(adapters);
        int[] slots = [-1, .. adapters.Select(a => slotOf[a])];
        // Sequence s runs prompt s (so lengths differ) under case s.
        var prompts = Enumerable.Range(0, 4).Select(i => GoldenFiles.PromptIds(golden, i)).ToArray();
        var tokenSlots = prompts.SelectMany((p, s) => Enumerable.Repeat(slots[s], p.Length)).ToArray();
        var logits = runner.Step(prompts, [0, 0, 0, 0], t =>
        {
            var tensor = device.Upload(tokenSlots, t);
            _owned.Add(tensor);
            return new LoraBatchMapping(tensor, true);
        });
        int row = 0;
        for (int s = 0; s < 4; s++)
        {
            var expected = golden.ReadFloats($"{cases[s]}.prompt{s}.logits");
            GoldenFiles.AssertLogitsMatch(logits.AsSpan(row * vocab, prompts[s].Length * vocab).ToArray(), expected, vocab, 1e-4, $"{cases[s]} in the mix");
            row += prompts[s].Length;
        }
    }

    [Fact]
    public void BF16_model_with_vim_upper_matches_its_goldens()
    {
        var device = TestDevices.ForModel;
        var (model, manager, adapters) = LoadWithAdapters(device, "vim-tiny-bf16");
        using var golden = SafetensorsFile.Open(Fixtures.Golden("vim-tiny-bf16.safetensors"));
        using var runner = new SequenceRunner(model);
        int slot = manager.ActivateForStep([adapters[0]])[adapters[0]];
        for (int i = 0; i < 3; i++)
        {
            var ids = GoldenFiles.PromptIds(golden, i);
            GoldenFiles.AssertLogitsMatch(runner.PromptLogits(ids, AllTokens(device, slot)),
                golden.ReadFloats($"vim-upper.prompt{i}.logits"), model.Config.VocabSize, 1e-4, $"bf16 vim-upper prompt {i}");
            var greedy = golden.ReadInt64($"vim-upper.prompt{i}.greedy").Select(v => (int)v).ToArray();
            Assert.Equal(greedy, runner.Greedy(ids, greedy.Length, AllTokens(device, slot)));
        }
    }

    public void Dispose()
    {
        for (int i = _owned.Count - 1; i >= 0; i--) _owned[i].Dispose();
    }
}
