using System.Text.Json;
using LoraEngine.Models.Safetensors;
using LoraEngine.Sampling;
using LoraEngine.TestSupport;
using Xunit;

namespace LoraEngine.Engine.Tests;

/// <summary>
/// Every golden case × prompt of the model under test (vim-tiny: four cases × five prompts; vim-tiny-bf16, what GPU runs
/// carry: two × three) submitted together to one engine with MaxLoras = 2 and a KV pool small enough to force
/// preemption: greedy tokens exact, prompt logprobs equal to log-softmax of the golden logits.
/// </summary>
public class LlmEngineGoldenTests
{
    static int[] Ids(SafetensorsFile golden, string name) => golden.ReadInt64(name).Select(v => (int)v).ToArray();

    [Fact]
    public void All_cases_together_with_preemption_match_goldens()
    {
        string model = EngineFactory.DefaultModel;
        using var manifest = JsonDocument.Parse(File.ReadAllText(Fixtures.Golden($"{model}.json")));
        var cases = manifest.RootElement.GetProperty("cases").EnumerateArray().Select(c => c.GetProperty("name").GetString()!).ToArray();
        int prompts = manifest.RootElement.GetProperty("prompts").GetArrayLength();
        int newTokens = manifest.RootElement.GetProperty("greedy_new_tokens").GetInt32();
        using var golden = SafetensorsFile.Open(Fixtures.Golden($"{model}.safetensors"));
        // A KV pool of half the blocks all requests need at once (but room for the longest alone) forces preemption.
        var needs = Enumerable.Range(0, prompts).Select(i => (Ids(golden, $"prompt{i}.ids").Length + newTokens + 7) / 8).ToArray();
        int blocks = Math.Max(needs.Max(), cases.Length * needs.Sum() / 2);
        // The goldens keep the adapters' F32 values (vim-tiny-bf16's: only the base weights are BF16), where "auto" would
        // store them in the base model's dtype as vLLM does.
        using var engine = LlmEngine.FromEngineArgs(EngineFactory.Args() with { NumGpuBlocksOverride = blocks, BlockSize = 8, MaxModelLen = 8 * needs.Max(), LoraDtype = "float32" });
        var sampling = new SamplingParams { Temperature = 0, MaxTokens = newTokens, IgnoreEos = true, PromptLogprobs = 2 };
        for (int c = 0; c < cases.Length; c++)
            for (int i = 0; i < prompts; i++)
                engine.AddRequest($"{cases[c]}/{i}", Ids(golden, $"prompt{i}.ids"), sampling, cases[c] == "base" ? null : EngineFactory.Lora(cases[c]));

        var outputs = EngineFactory.RunToCompletion(engine);
        Assert.True(engine.Metrics.Last!.NumPreemptions > 0, "the small KV pool should have forced preemption");
        int vocab = engine.ModelConfig.VocabSize;
        for (int c = 0; c < cases.Length; c++)
            for (int i = 0; i < prompts; i++)
            {
                var output = outputs[$"{cases[c]}/{i}"];
                Assert.Equal(Ids(golden, $"{cases[c]}.prompt{i}.greedy"), output.Outputs[0].TokenIds);
                Assert.Equal("length", output.Outputs[0].FinishReason);

                var logits = golden.ReadFloats($"{cases[c]}.prompt{i}.logits");
                var prompt = output.PromptTokenIds;
                Assert.Null(output.PromptLogprobs![0]);
                for (int p = 1; p < prompt.Count; p++)
                {
                    var expected = Logprobs.LogSoftmax(logits.AsSpan((p - 1) * vocab, vocab));
                    var entry = output.PromptLogprobs[p]!;
                    Assert.True(entry.Count is >= 2 and <= 3, $"top 2 plus the prompt token, got {entry.Count}");
                    foreach (var (token, lp) in entry)
                        Assert.True(Math.Abs(lp.Value - expected[token]) <= 1e-4 * Math.Max(1, Math.Abs(expected[token])),
                            $"{cases[c]} prompt {i} position {p} token {token}: {lp.Value} vs {expected[token]}");
                    Assert.Equal(Logprobs.Rank(expected, prompt[p]), entry[prompt[p]].Rank);
                }
            }
        Assert.Equal(0, engine.NumUsedKvBlocks);
        Assert.Equal(0, engine.NumLoraPins);
    }

    [Fact]
    public void A_request_alone_and_in_a_mix_gives_the_same_tokens()
    {
        var sampling = new SamplingParams { Temperature = 0.8, TopP = 0.9, MaxTokens = 20, IgnoreEos = true, Seed = 1234 };
        List<int> Alone()
        {
            using var engine = LlmEngine.FromEngineArgs(EngineFactory.Args());
            engine.AddRequest("me", "The cursor moves", sampling, EngineFactory.Lora("vim-upper"));
            return EngineFactory.RunToCompletion(engine)["me"].Outputs[0].TokenIds.ToList();
        }
        var alone = Alone();
        using var mixed = LlmEngine.FromEngineArgs(EngineFactory.Args());
        mixed.AddRequest("other1", "Vim is", new SamplingParams { MaxTokens = 30, Seed = 1 }, EngineFactory.Lora("vim-rot13"));
        mixed.AddRequest("me", "The cursor moves", sampling, EngineFactory.Lora("vim-upper"));
        mixed.AddRequest("other2", "To delete a line, type", new SamplingParams { MaxTokens = 5 });
        Assert.Equal(alone, EngineFactory.RunToCompletion(mixed)["me"].Outputs[0].TokenIds);
    }
}
