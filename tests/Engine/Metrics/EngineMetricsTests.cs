using System.Diagnostics.Metrics;
using Xunit;

namespace LoraEngine.Engine.Tests.Metrics;

/// <summary>The gauges follow requests that leave between steps; failed requests and prefix-cache lookups are counted.</summary>
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

    [Fact]
    public void Prefix_cache_queries_and_hits_count_the_tokens_looked_up_and_found()
    {
        using var engine = LlmEngine.FromEngineArgs(EngineFactory.Args()); // block size 16
        var meter = new Dictionary<string, long>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter == engine.Metrics.Meter && instrument.Name.StartsWith("loraengine.prefix_cache")) l.EnableMeasurementEvents(instrument);
        };
        listener.SetMeasurementEventCallback<long>((instrument, value, _, _) =>
        {
            lock (meter) meter[instrument.Name] = meter.GetValueOrDefault(instrument.Name) + value;
        });
        listener.Start();
        int[] prompt = Enumerable.Range(5, 40).ToArray();
        var sampling = new SamplingParams { MaxTokens = 2, IgnoreEos = true };
        engine.AddRequest("first", prompt, sampling);
        EngineFactory.RunToCompletion(engine);
        engine.AddRequest("second", [.. prompt[..35], 900, 901], sampling);
        EngineFactory.RunToCompletion(engine);

        Assert.Equal(40 + 37, engine.Metrics.PrefixCacheQueries);
        Assert.Equal(32, engine.Metrics.PrefixCacheHits); // the second found the two full blocks they share
        Assert.Equal(40 + 37 - 32, engine.Metrics.PromptTokens); // and computed only the rest
        Assert.Equal(40 + 37, meter["loraengine.prefix_cache_queries"]);
        Assert.Equal(32, meter["loraengine.prefix_cache_hits"]);
    }
}
