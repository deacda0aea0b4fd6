using Xunit;

namespace LoraEngine.Engine.Tests.Metrics;

/// <summary>The gauges follow requests that leave between steps, and failed requests are counted.</summary>
public class EngineMetricsTests
{
    [Fact]
    public void An_abort_updates_running_and_kv_gauges_without_another_step()
    {
        using var engine = LlmEngine.FromEngineArgs(EngineFactory.Args());
        engine.AddRequest("a", "Vim is", new SamplingParams { MaxTokens = 100, IgnoreEos = true });
        engine.AddRequest("b", "Vim is", new SamplingParams { MaxTokens = 100, IgnoreEos = true }, EngineFactory.Lora("vim-upper"));
        engine.Step();
        engine.Step();
        Assert.Equal(2, engine.Metrics.Last!.NumRunning);
        Assert.True(engine.Metrics.Last.KvBlocksUsed > 0);
        long steps = engine.Metrics.Steps;

        engine.AbortRequest("a");
        Assert.Equal(1, engine.Metrics.Last.NumRunning);
        engine.AbortRequest("b");
        Assert.Equal(0, engine.Metrics.Last.NumRunning);
        Assert.Equal(0, engine.Metrics.Last.KvBlocksUsed);
        Assert.Equal(0, engine.Metrics.Last.KvCacheUsage);
        Assert.Empty(engine.Metrics.Last.RunningLoraAdapters);
        Assert.Equal(steps, engine.Metrics.Steps); // an abort is not a step
        Assert.Equal(0, engine.Metrics.RequestsFailed);
    }
}
