using LoraEngine.Lora;
using LoraEngine.TestSupport;
using Xunit;

namespace LoraEngine.Engine.Tests;

public class LlmEngineTests
{
    [Fact]
    public void Aborting_many_requests_mid_flight_leaves_no_blocks_or_pins()
    {
        using var engine = LlmEngine.FromEngineArgs(EngineFactory.Args());
        var rnd = new Random(7);
        for (int i = 0; i < 40; i++)
            engine.AddRequest($"r{i}", "When you want to search for a pattern", new SamplingParams { MaxTokens = 50, IgnoreEos = true, Seed = i },
                rnd.Next(4) is var a && a == 0 ? null : EngineFactory.Lora(EngineFactory.Adapters[a - 1]));
        for (int step = 0; step < 6; step++) engine.Step();
        Assert.True(engine.NumUsedKvBlocks > 0);
        Assert.True(engine.NumLoraPins > 0);
        for (int i = 0; i < 40; i += 2) engine.AbortRequest($"r{i}");
        for (int step = 0; step < 3; step++) engine.Step();
        for (int i = 1; i < 40; i += 2) engine.AbortRequest($"r{i}");
        Assert.False(engine.HasUnfinishedRequests);
        Assert.Equal(0, engine.NumUsedKvBlocks);
        Assert.Equal(0, engine.NumLoraPins);
        engine.AbortRequest("never-existed");
    }

    [Fact]
    public void Prefill_chunks_that_sample_nothing_emit_no_output()
    {
        using var engine = LlmEngine.FromEngineArgs(EngineFactory.Args() with { MaxNumBatchedTokens = 16 });
        var prompt = Enumerable.Range(5, 60).ToArray(); // four chunks of 16 tokens
        engine.AddRequest("chunked", prompt, new SamplingParams { MaxTokens = 2, IgnoreEos = true });
        var perStep = new List<int>();
        while (engine.HasUnfinishedRequests) perStep.Add(engine.Step().Count);
        Assert.Equal([0, 0, 0, 1, 1], perStep);
    }

    [Fact]
    public void Same_seed_gives_the_same_tokens_and_n_sequences_differ()
    {
        using var engine = LlmEngine.FromEngineArgs(EngineFactory.Args());
        var p = new SamplingParams { Temperature = 1.0, TopK = 50, MaxTokens = 16, IgnoreEos = true, Seed = 99, N = 3 };
        engine.AddRequest("a", "Vim is", p);
        engine.AddRequest("b", "Vim is", p);
        var outputs = EngineFactory.RunToCompletion(engine);
        Assert.Equal(3, outputs["a"].Outputs.Count);
        for (int i = 0; i < 3; i++) Assert.Equal(outputs["a"].Outputs[i].TokenIds, outputs["b"].Outputs[i].TokenIds);
        Assert.NotEqual(outputs["a"].Outputs[0].TokenIds, outputs["a"].Outputs[1].TokenIds);
    }

    [Fact]
    public void Stop_strings_end_generation_and_are_not_emitted()
    {
        using var engine = LlmEngine.FromEngineArgs(EngineFactory.Args());
        engine.AddRequest("free", "To delete a line, type", new SamplingParams { Temperature = 0, MaxTokens = 24, IgnoreEos = true });
        string text = EngineFactory.RunToCompletion(engine)["free"].Outputs[0].Text;
        string stop = text.Substring(8, 3); // something the greedy text is known to contain
        engine.AddRequest("stopped", "To delete a line, type", new SamplingParams { Temperature = 0, MaxTokens = 24, IgnoreEos = true, Stop = [stop] });
        var output = EngineFactory.RunToCompletion(engine)["stopped"].Outputs[0];
        Assert.Equal("stop", output.FinishReason);
        Assert.Equal(text[..text.IndexOf(stop, StringComparison.Ordinal)], output.Text);
    }

    [Fact]
    public void Logprobs_hold_the_sampled_token_and_the_top_k_with_ranks()
    {
        using var engine = LlmEngine.FromEngineArgs(EngineFactory.Args());
        engine.AddRequest("lp", "Vim is", new SamplingParams { Temperature = 0, MaxTokens = 5, Logprobs = 3, IgnoreEos = true });
        var output = EngineFactory.RunToCompletion(engine)["lp"].Outputs[0];
        Assert.Equal(5, output.Logprobs!.Count);
        for (int i = 0; i < 5; i++)
        {
            var entry = output.Logprobs[i];
            Assert.Equal(1, entry[output.TokenIds[i]].Rank); // greedy picks rank 1
            Assert.Equal(3, entry.Count);
        }
        Assert.Equal(Enumerable.Range(0, 5).Sum(i => (double)output.Logprobs[i][output.TokenIds[i]].Value), output.CumulativeLogprob!.Value, 4);
    }

    [Fact]
    public void Bad_arguments_are_rejected_at_once_and_nothing_is_queued()
    {
        using var engine = LlmEngine.FromEngineArgs(EngineFactory.Args());
        var ok = new SamplingParams();
        Assert.Equal("Temperature", Assert.Throws<ArgumentException>(() => engine.AddRequest("x", "hi", ok with { Temperature = -1 })).ParamName);
        Assert.Equal("TopP", Assert.Throws<ArgumentException>(() => engine.AddRequest("x", "hi", ok with { TopP = 0 })).ParamName);
        Assert.Equal("Logprobs", Assert.Throws<ArgumentException>(() => engine.AddRequest("x", "hi", ok with { Logprobs = 21 })).ParamName);
        Assert.Equal("promptTokenIds", Assert.Throws<ArgumentException>(() => engine.AddRequest("x", new[] { 5, 999_999 }, ok)).ParamName);
        Assert.Throws<ArgumentException>(() => engine.AddRequest("x", Enumerable.Repeat(5, 600).ToArray(), ok));
        var missing = Assert.Throws<LoraException>(() => engine.AddRequest("x", "hi", ok, new LoraRequest("ghost", 9, "/no/such/adapter")));
        Assert.Contains("ghost", missing.Message);
        Assert.Equal("LoraIntId", Assert.Throws<ArgumentException>(() => engine.AddRequest("x", "hi", ok, new LoraRequest("zero", 0, Fixtures.Adapter("vim-upper")))).ParamName);
        Assert.False(engine.HasUnfinishedRequests);
        engine.AddRequest("fine", "hi", ok with { MaxTokens = 2 });
        Assert.Single(EngineFactory.RunToCompletion(engine));
    }

    /// <summary>
    /// The sampler works in 32-bit floats: values that would become 0 or infinite there are refused when the request is
    /// added (before: accepted, then a step failed and the engine stopped for every request); a tiny positive temperature
    /// samples at vLLM's minimum and a tiny top_p keeps the top token, while other requests run beside them.
    /// </summary>
    [Fact]
    public void Sampling_values_beyond_32_bit_floats_are_refused_or_mapped_per_request()
    {
        using var engine = LlmEngine.FromEngineArgs(EngineFactory.Args());
        var ok = new SamplingParams { MaxTokens = 6, IgnoreEos = true, Seed = 7 };
        Assert.Equal("Temperature", Assert.Throws<ArgumentException>(() => engine.AddRequest("x", "hi", ok with { Temperature = 1e308 })).ParamName);
        foreach (double r in new[] { 1e300, 1e-300, 1e31, 1e-31 })
            Assert.Equal("RepetitionPenalty", Assert.Throws<ArgumentException>(() => engine.AddRequest("x", "hi", ok with { RepetitionPenalty = r })).ParamName);
        Assert.False(engine.HasUnfinishedRequests);

        engine.AddRequest("greedy", "Vim is", ok with { Temperature = 0 });
        engine.AddRequest("tiny top_p", "Vim is", ok with { TopP = 1e-50 });
        engine.AddRequest("tiny temperature", "Vim is", ok with { Temperature = 1e-40 });
        engine.AddRequest("minimum temperature", "Vim is", ok with { Temperature = SamplingParams.MinPositiveTemperature });
        engine.AddRequest("penalised", "Vim is", ok with { RepetitionPenalty = 1e-30, Temperature = 0.5 });
        engine.AddRequest("other", "Vim is", ok);
        var outputs = EngineFactory.RunToCompletion(engine);
        Assert.All(outputs.Values, o => Assert.Equal("length", o.Outputs[0].FinishReason));
        Assert.Equal(outputs["greedy"].Outputs[0].TokenIds, outputs["tiny top_p"].Outputs[0].TokenIds);
        Assert.Equal(outputs["minimum temperature"].Outputs[0].TokenIds, outputs["tiny temperature"].Outputs[0].TokenIds);
    }

    [Fact]
    public void Over_rank_adapter_is_refused_by_an_engine_with_a_smaller_max_rank()
    {
        using var engine = LlmEngine.FromEngineArgs(EngineFactory.Args() with { MaxLoraRank = 8 });
        var e = Assert.Throws<LoraException>(() => engine.AddRequest("x", "hi", new SamplingParams(), EngineFactory.Lora("vim-rot13")));
        Assert.Contains("greater than max_lora_rank 8", e.Message);
        Assert.False(engine.HasUnfinishedRequests);
        Assert.DoesNotContain(2, engine.ListLoras());
    }

    [Fact]
    public void Adapters_can_be_added_listed_and_removed()
    {
        using var engine = LlmEngine.FromEngineArgs(EngineFactory.Args());
        Assert.True(engine.AddLora(EngineFactory.Lora("vim-upper")));
        Assert.Contains(1, engine.ListLoras());
        Assert.True(engine.RemoveLora(1));
        Assert.DoesNotContain(1, engine.ListLoras());
        Assert.False(engine.RemoveLora(42));
    }

    [Fact]
    public void Not_enough_memory_says_what_was_needed_and_what_is_available()
    {
        var e = Assert.Throws<InvalidOperationException>(() =>
            LlmEngine.FromEngineArgs(EngineFactory.Args() with { NumGpuBlocksOverride = null, GpuMemoryUtilization = 1e-6 }));
        Assert.Contains("needed", e.Message);
        Assert.Contains("available", e.Message);
    }
}
