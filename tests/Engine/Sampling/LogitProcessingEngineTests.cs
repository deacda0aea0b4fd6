using Xunit;

namespace LoraEngine.Engine.Tests.Sampling;

/// <summary>Logit bias, min_tokens and stop tokens through the engine on the fixture model (greedy, so exact).</summary>
public class LogitProcessingEngineTests
{
    const string Prompt = "To delete a line, type";
    const int Eos = 1;

    static CompletionOutput Run(LlmEngine engine, SamplingParams p)
    {
        engine.AddRequest("r", Prompt, p);
        return EngineFactory.RunToCompletion(engine)["r"].Outputs[0];
    }

    [Fact]
    public void Logit_bias_forces_and_bans_tokens()
    {
        using var engine = LlmEngine.FromEngineArgs(EngineFactory.Args());
        var greedy = new SamplingParams { Temperature = 0, MaxTokens = 6, IgnoreEos = true };
        var free = Run(engine, greedy).TokenIds;
        var forced = Run(engine, greedy with { LogitBias = new Dictionary<int, float> { [77] = 100 } }).TokenIds;
        Assert.All(forced, t => Assert.Equal(77, t));
        var banned = Run(engine, greedy with { LogitBias = free.Distinct().ToDictionary(t => t, _ => -100f) }).TokenIds;
        Assert.Empty(banned.Intersect(free));
    }

    [Fact]
    public void Min_tokens_holds_off_eos_and_the_stop_token_counts()
    {
        using var engine = LlmEngine.FromEngineArgs(EngineFactory.Args());
        var eager = new SamplingParams { Temperature = 0, MaxTokens = 20, LogitBias = new Dictionary<int, float> { [Eos] = 100 } };
        Assert.Equal([Eos], Run(engine, eager).TokenIds);
        var held = Run(engine, eager with { MinTokens = 5 });
        Assert.Equal(6, held.TokenIds.Count);
        Assert.DoesNotContain(Eos, held.TokenIds.Take(5));
        Assert.Equal(Eos, held.TokenIds[5]);
        Assert.Equal("stop", held.FinishReason);
        Assert.Null(held.StopReason); // EOS is no stop_reason in vLLM
    }

    [Fact]
    public void Stop_token_ids_stop_with_the_id_as_stop_reason_and_its_text_only_when_asked()
    {
        using var engine = LlmEngine.FromEngineArgs(EngineFactory.Args("vim-tiny-bf16"));
        var greedy = new SamplingParams { Temperature = 0, MaxTokens = 12, IgnoreEos = true };
        var free = Run(engine, greedy);
        int stop = free.TokenIds[3];
        int at = free.TokenIds.ToList().IndexOf(stop);
        var stopped = Run(engine, greedy with { StopTokenIds = [stop] });
        Assert.Equal(free.TokenIds.Take(at + 1), stopped.TokenIds);
        Assert.Equal("stop", stopped.FinishReason);
        Assert.Equal(stop, stopped.StopReason);
        var included = Run(engine, greedy with { StopTokenIds = [stop], IncludeStopStrInOutput = true });
        Assert.Equal(stopped.Text + engine.Tokenizer.Decode([stop]), included.Text);
        Assert.NotEqual(stopped.Text, included.Text);

        string stopString = free.Text.Substring(4, 3);
        var byString = Run(engine, greedy with { Stop = [stopString] });
        Assert.Equal(stopString, byString.StopReason);
    }
}
