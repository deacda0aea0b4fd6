using Xunit;

namespace LoraEngine.Engine.Tests;

/// <summary>
/// vLLM's output kinds: cumulative outputs, deltas that add up to them, and the final output alone, for the same
/// requests (greedy and seeded, n = 2, logprobs, prompt logprobs over chunked prefill, a stop string held back).
/// </summary>
public class OutputKindTests
{
    // Prompt logprobs over a prompt longer than the step's token budget (MaxNumBatchedTokens 256), so they come in chunks.
    static readonly int[] LongPrompt = Enumerable.Range(3, 300).Select(i => i % 500 + 3).ToArray();

    static SamplingParams Params(RequestOutputKind kind, IReadOnlyList<string>? stop = null) => new()
    {
        N = 2, Temperature = 0.8, Seed = 7, MaxTokens = 20, IgnoreEos = true, Logprobs = 2, PromptLogprobs = 1, Stop = stop, OutputKind = kind,
    };

    /// <summary>Every output each request returned, in step order.</summary>
    static Dictionary<string, List<RequestOutput>> Run(SamplingParams sampling, IReadOnlyList<string>? names = null)
    {
        using var engine = LlmEngine.FromEngineArgs(EngineFactory.Args());
        engine.AddRequest("short", "To delete a line, type", sampling);
        engine.AddRequest("long", LongPrompt, sampling);
        var all = new Dictionary<string, List<RequestOutput>> { ["short"] = new(), ["long"] = new() };
        while (engine.HasUnfinishedRequests)
            foreach (var o in engine.Step())
                all[o.RequestId].Add(o);
        return all;
    }

    [Fact]
    public void Final_only_returns_one_output_a_request_equal_to_the_last_cumulative_one()
    {
        var cumulative = Run(Params(RequestOutputKind.Cumulative));
        var final = Run(Params(RequestOutputKind.FinalOnly));
        foreach (var (id, outputs) in final)
        {
            var only = Assert.Single(outputs);
            Assert.True(only.Finished);
            AssertSame(cumulative[id][^1], only);
        }
        Assert.True(cumulative["long"].Count > 2); // the cumulative kind answers at every step
    }

    [Fact]
    public void Deltas_add_up_to_the_cumulative_outputs()
    {
        var cumulative = Run(Params(RequestOutputKind.Cumulative));
        string text = cumulative["short"][^1].Outputs[0].Text;
        string stop = text.Substring(6, 3); // a stop string the text holds: its first characters are held back until it fails or matches
        foreach (var stops in new[] { null, new[] { stop } })
        {
            var expected = stops is null ? cumulative : Run(Params(RequestOutputKind.Cumulative, stops));
            var deltas = Run(Params(RequestOutputKind.Delta, stops));
            foreach (var (id, outputs) in deltas)
            {
                var last = expected[id][^1];
                Assert.True(outputs[^1].Finished);
                Assert.All(outputs[..^1], o => Assert.False(o.Finished));
                var promptLogprobs = outputs.SelectMany(o => o.PromptLogprobs ?? []).ToArray();
                Assert.Equal(last.PromptLogprobs!.Count, promptLogprobs.Length);
                for (int p = 0; p < promptLogprobs.Length; p++) AssertSameEntry(last.PromptLogprobs[p], promptLogprobs[p]);
                for (int s = 0; s < 2; s++)
                {
                    var whole = last.Outputs[s];
                    var parts = outputs.Select(o => o.Outputs[s]).ToArray();
                    Assert.Equal(whole.Text, string.Concat(parts.Select(c => c.Text)));
                    Assert.Equal(whole.TokenIds, parts.SelectMany(c => c.TokenIds));
                    var logprobs = parts.SelectMany(c => c.Logprobs!).ToArray();
                    Assert.Equal(whole.Logprobs!.Count, logprobs.Length);
                    for (int t = 0; t < logprobs.Length; t++) AssertSameEntry(whole.Logprobs[t], logprobs[t]);
                    Assert.Equal(whole.CumulativeLogprob, parts[^1].CumulativeLogprob);
                    Assert.Equal(whole.FinishReason, parts[^1].FinishReason);
                    Assert.Equal(whole.StopReason, parts[^1].StopReason);
                }
                // Each delta has something new: no output of a prefill chunk that sampled nothing and brought no prompt logprobs.
                Assert.All(outputs, o => Assert.True(o.Finished || o.PromptLogprobs is not null || o.Outputs.Any(c => c.TokenIds.Count > 0)));
            }
            if (stops is not null) Assert.Contains(expected["short"][^1].Outputs, c => c.FinishReason == "stop");
        }
    }

    [Fact]
    public void An_unknown_output_kind_is_refused_naming_the_field()
    {
        using var engine = LlmEngine.FromEngineArgs(EngineFactory.Args());
        var e = Assert.ThrowsAny<ArgumentException>(() => engine.AddRequest("bad", "Vim is", new SamplingParams { OutputKind = (RequestOutputKind)3 }));
        Assert.Equal(nameof(SamplingParams.OutputKind), e.ParamName);
        Assert.False(engine.HasUnfinishedRequests);
    }

    [Fact]
    public void Llm_generate_returns_whole_outputs_whatever_kind_it_is_given()
    {
        using var llm = new Llm(EngineFactory.Args());
        var sampling = new SamplingParams { Temperature = 0, MaxTokens = 6, IgnoreEos = true };
        var cumulative = llm.Generate(["Vim is"], sampling, useProgressBar: false)[0];
        var delta = llm.Generate(["Vim is"], sampling with { OutputKind = RequestOutputKind.Delta }, useProgressBar: false)[0];
        Assert.Equal(6, cumulative.Outputs[0].TokenIds.Count);
        AssertSame(cumulative, delta);
    }

    static void AssertSame(RequestOutput expected, RequestOutput actual)
    {
        Assert.Equal(expected.Finished, actual.Finished);
        Assert.Equal(expected.PromptLogprobs?.Count, actual.PromptLogprobs?.Count);
        for (int p = 0; p < (expected.PromptLogprobs?.Count ?? 0); p++) AssertSameEntry(expected.PromptLogprobs![p], actual.PromptLogprobs![p]);
        Assert.Equal(expected.Outputs.Count, actual.Outputs.Count);
        foreach (var (e, a) in expected.Outputs.Zip(actual.Outputs))
        {
            Assert.Equal(e.Text, a.Text);
            Assert.Equal(e.TokenIds, a.TokenIds);
            Assert.Equal(e.CumulativeLogprob, a.CumulativeLogprob);
            Assert.Equal(e.FinishReason, a.FinishReason);
            Assert.Equal(e.Logprobs?.Count, a.Logprobs?.Count);
            for (int t = 0; t < (e.Logprobs?.Count ?? 0); t++) AssertSameEntry(e.Logprobs![t], a.Logprobs![t]);
        }
    }

    static void AssertSameEntry(IReadOnlyDictionary<int, Logprob>? expected, IReadOnlyDictionary<int, Logprob>? actual)
    {
        Assert.Equal(expected is null, actual is null);
        if (expected is null) return;
        Assert.Equal(expected.Keys.Order(), actual!.Keys.Order());
        foreach (var (id, lp) in expected) Assert.Equal(lp, actual[id]);
    }
}
