using Xunit;

namespace LoraEngine.Engine.Tests.Execution;

/// <summary>
/// Decode steps replayed from CUDA graphs (padded to a bucket) give exactly what eager steps give, alone or beside other
/// requests — tokens and logprobs, greedy or sampled on the device with a seed, filters, penalties and a logit bias.
/// On a device without graphs every run is eager and the test still checks batch invariance.
/// </summary>
public class DecodeGraphTests
{
    static readonly string[] Prompts = ["To delete a line, type", "Vim is", "When you want to search for a pattern", "The cursor moves"];

    static SamplingParams ParamsOf(int i) => i switch
    {
        1 => new SamplingParams { Temperature = 0, MaxTokens = 12, IgnoreEos = true, Logprobs = 2 },
        3 => new SamplingParams
        {
            Temperature = 0.9, TopK = 40, TopP = 0.9, MinP = 0.02, RepetitionPenalty = 1.2, FrequencyPenalty = 0.3, Seed = 4242,
            Logprobs = 3, MaxTokens = 12, IgnoreEos = true, LogitBias = new Dictionary<int, float> { [10] = 3f },
        },
        _ => new SamplingParams { Temperature = 0, MaxTokens = 12, IgnoreEos = true },
    };

    static Dictionary<string, RequestOutput> Run(bool enforceEager, IEnumerable<int> which)
    {
        using var engine = LlmEngine.FromEngineArgs(EngineFactory.Args() with { EnforceEager = enforceEager });
        foreach (int i in which) engine.AddRequest($"r{i}", Prompts[i], ParamsOf(i), i == 2 ? EngineFactory.Lora("vim-upper") : null);
        return EngineFactory.RunToCompletion(engine);
    }

    [Fact]
    public void Graph_decode_equals_eager_decode_alone_and_padded_in_a_bucket()
    {
        var eager = Run(enforceEager: true, [0, 1, 2, 3]);
        var padded = Run(enforceEager: false, [1, 2, 3]);   // 3 sequences: bucket 4 with one padding row
        foreach (int i in new[] { 0, 1, 2, 3 })
        {
            var e = eager[$"r{i}"].Outputs[0];
            var others = new List<CompletionOutput> { Run(enforceEager: false, [i])[$"r{i}"].Outputs[0] }; // bucket 1
            if (padded.TryGetValue($"r{i}", out var p)) others.Add(p.Outputs[0]);
            foreach (var g in others)
            {
                Assert.Equal(e.TokenIds, g.TokenIds);
                Assert.Equal(e.CumulativeLogprob, g.CumulativeLogprob);
                if (e.Logprobs is not { } lp) continue;
                for (int t = 0; t < lp.Count; t++)
                {
                    Assert.Equal(lp[t].Keys.Order(), g.Logprobs![t].Keys.Order());
                    foreach (var (id, entry) in lp[t]) Assert.Equal(entry, g.Logprobs![t][id]);
                }
            }
        }
    }
}
