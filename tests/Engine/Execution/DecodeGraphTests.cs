using Xunit;

namespace LoraEngine.Engine.Tests.Execution;

/// <summary>
/// Decode steps replayed from CUDA graphs (padded to a bucket) give exactly what eager steps give, alone or beside other
/// requests. On a device without graphs both runs are eager and the test still checks batch invariance.
/// </summary>
public class DecodeGraphTests
{
    static readonly string[] Prompts = ["To delete a line, type", "Vim is", "When you want to search for a pattern"];

    static Dictionary<string, RequestOutput> Run(bool enforceEager, IEnumerable<int> which)
    {
        using var engine = LlmEngine.FromEngineArgs(EngineFactory.Args() with { EnforceEager = enforceEager });
        foreach (int i in which)
            engine.AddRequest($"r{i}", Prompts[i], new SamplingParams { Temperature = 0, MaxTokens = 12, IgnoreEos = true, Logprobs = i == 1 ? 2 : null },
                i == 2 ? EngineFactory.Lora("vim-upper") : null);
        return EngineFactory.RunToCompletion(engine);
    }

    [Fact]
    public void Graph_decode_equals_eager_decode_alone_and_padded_in_a_bucket()
    {
        var eager = Run(enforceEager: true, [0, 1, 2]);   // 3 sequences: bucket 4 with one padding row
        var graphs = Run(enforceEager: false, [0, 1, 2]);
        foreach (int i in new[] { 0, 1, 2 })
        {
            var alone = Run(enforceEager: false, [i])[$"r{i}"].Outputs[0];   // bucket 1
            var e = eager[$"r{i}"].Outputs[0];
            var g = graphs[$"r{i}"].Outputs[0];
            Assert.Equal(e.TokenIds, g.TokenIds);
            Assert.Equal(e.TokenIds, alone.TokenIds);
            if (e.Logprobs is not { } lp) continue;
            for (int t = 0; t < lp.Count; t++)
                foreach (var (id, entry) in lp[t])
                {
                    Assert.Equal(entry.Value, g.Logprobs![t][id].Value);
                    Assert.Equal(entry.Value, alone.Logprobs![t][id].Value);
                }
        }
    }
}
