using Xunit;

namespace LoraEngine.Engine.Tests;

/// <summary>Bounded work per request: prompt characters (checked before tokenising), n, and n × max_tokens.</summary>
public class LimitsTests
{
    [Fact]
    public void Defaults_follow_the_context_length()
    {
        using var engine = LlmEngine.FromEngineArgs(EngineFactory.Args());
        Assert.Equal(512, engine.Config.MaxModelLen);
        Assert.Equal(32 * 512, engine.Config.MaxPromptChars);
        Assert.Equal(16 * 512, engine.Config.MaxRequestOutputTokens);
        Assert.Equal(128, engine.Config.Args.MaxN);
    }

    [Fact]
    public void An_oversized_prompt_is_refused_before_it_is_tokenised()
    {
        using var engine = LlmEngine.FromEngineArgs(EngineFactory.Args());
        string huge = new('a', 8 << 20);
        long before = GC.GetAllocatedBytesForCurrentThread();
        var e = Assert.Throws<ArgumentException>(() => engine.AddRequest("big", huge, new SamplingParams()));
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal("prompt", e.ParamName);
        Assert.Contains("8388608 characters, more than the 16384 allowed", e.Message);
        Assert.True(allocated < 1 << 20, $"refusing allocated {allocated} bytes: the prompt was tokenised");
    }

    [Fact]
    public void N_and_n_times_max_tokens_are_bounded()
    {
        using var engine = LlmEngine.FromEngineArgs(EngineFactory.Args() with { MaxN = 8, MaxRequestOutputTokens = 1000 });
        Assert.Equal("N", Assert.Throws<ArgumentException>(() => engine.AddRequest("n", "Vim is", new SamplingParams { N = 20000 })).ParamName);
        var e = Assert.Throws<ArgumentException>(() => engine.AddRequest("t", "Vim is", new SamplingParams { N = 8, MaxTokens = 200 }));
        Assert.Equal("MaxTokens", e.ParamName);
        Assert.Contains("n × max_tokens is 1600, more than the 1000", e.Message);
        // Without max_tokens the rest of the context counts: 3 × (512 - prompt) > 1000.
        Assert.Equal("N", Assert.Throws<ArgumentException>(() => engine.AddRequest("u", "Vim is", new SamplingParams { N = 3, MaxTokens = null })).ParamName);
        Assert.False(engine.HasUnfinishedRequests);
        engine.AddRequest("ok", "Vim is", new SamplingParams { N = 8, MaxTokens = 125 });
        Assert.True(engine.HasUnfinishedRequests);
    }

    [Fact]
    public void Limits_must_be_positive()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => (EngineFactory.Args() with { MaxN = 0 }).CreateEngineConfig());
        Assert.Throws<ArgumentOutOfRangeException>(() => (EngineFactory.Args() with { MaxPromptChars = 0 }).CreateEngineConfig());
        Assert.Throws<ArgumentOutOfRangeException>(() => (EngineFactory.Args() with { MaxRequestOutputTokens = -1 }).CreateEngineConfig());
    }
}
