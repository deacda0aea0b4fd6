using System.Diagnostics.Metrics;
using LoraEngine.Execution;
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

    [Fact]
    public void A_steps_time_is_split_into_the_devices_and_the_hosts()
    {
        using var engine = LlmEngine.FromEngineArgs(EngineFactory.Args());
        var runner = new SlowDevice(engine.Core.Runner);
        engine.Core.Runner = runner;
        var hostTimes = new List<double>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter == engine.Metrics.Meter && instrument.Name == "loraengine.step_host_time") l.EnableMeasurementEvents(instrument);
        };
        listener.SetMeasurementEventCallback<double>((_, value, _, _) => { lock (hostTimes) hostTimes.Add(value); });
        listener.Start();

        engine.AddRequest("a", "Vim is", new SamplingParams { MaxTokens = 4, IgnoreEos = true });
        EngineFactory.RunToCompletion(engine);

        var m = engine.Metrics;
        Assert.Equal(4, m.Steps);
        Assert.Equal(4, hostTimes.Count);
        // Each step waited at least the slow device's 30 ms, and the host's share is what is left of the step.
        Assert.True(m.DeviceWaitTime >= 4 * SlowDevice.Delay, $"waited {m.DeviceWaitTime}");
        Assert.True(m.DeviceWaitTime < m.StepTime, $"waited {m.DeviceWaitTime} of {m.StepTime}");
        Assert.All(hostTimes, t => Assert.True(t >= 0, $"host time {t}"));
        Assert.Equal((m.StepTime - m.DeviceWaitTime).TotalSeconds, hostTimes.Sum(), 6);
    }

    /// <summary>A device that takes 30 ms more to finish each step, all of it waited for.</summary>
    sealed class SlowDevice(IModelRunner inner) : IModelRunner
    {
        public static readonly TimeSpan Delay = TimeSpan.FromMilliseconds(30);
        TimeSpan _extra;

        public TimeSpan DeviceWait => inner.DeviceWait + _extra;

        public IReadOnlyList<ExecutionResult> Execute(IReadOnlyList<ExecutionItem> items)
        {
            var results = inner.Execute(items);
            Thread.Sleep(Delay);
            _extra += Delay;
            return results;
        }

        public void Dispose() => inner.Dispose();
    }
}
