using System.Diagnostics.Metrics;

namespace LoraEngine.Metrics;

/// <summary>
/// System.Diagnostics.Metrics instruments of an engine (meter "LoraEngine"), fed by every step and every abort (so the
/// gauges follow requests that leave between steps); also keeps
/// running totals that a Prometheus endpoint can print without a listener.
/// </summary>
public sealed class EngineMetrics : IStatLogger, IDisposable
{
    /// <summary>The name of the meter the instruments belong to; listen to it with OpenTelemetry or dotnet-counters.</summary>
    public const string MeterName = "LoraEngine";

    readonly Meter _meter = new(MeterName);
    readonly Counter<long> _promptTokens;
    readonly Counter<long> _generationTokens;
    readonly Counter<long> _finished;
    readonly Counter<long> _failed;
    readonly Counter<long> _prefixCacheQueries;
    readonly Counter<long> _prefixCacheHits;
    readonly Histogram<double> _ttft;
    readonly Histogram<double> _itl;
    readonly Histogram<double> _e2e;
    readonly Histogram<double> _stepHost;
    readonly object _lock = new();
    SchedulerStats? _last;

    /// <summary>Creates the meter and its instruments (loraengine.prompt_tokens, loraengine.time_to_first_token, ...).</summary>
    public EngineMetrics()
    {
        _promptTokens = _meter.CreateCounter<long>("loraengine.prompt_tokens", "tokens", "Prompt tokens computed");
        _generationTokens = _meter.CreateCounter<long>("loraengine.generation_tokens", "tokens", "Tokens generated");
        _finished = _meter.CreateCounter<long>("loraengine.requests_finished", "requests", "Requests finished");
        _failed = _meter.CreateCounter<long>("loraengine.requests_failed", "requests", "Requests the engine failed (finish reason error)");
        _prefixCacheQueries = _meter.CreateCounter<long>("loraengine.prefix_cache_queries", "tokens", "Prompt tokens looked up in the prefix cache");
        _prefixCacheHits = _meter.CreateCounter<long>("loraengine.prefix_cache_hits", "tokens", "Prompt tokens found in the prefix cache");
        _ttft = _meter.CreateHistogram<double>("loraengine.time_to_first_token", "s", "Time to first token");
        _itl = _meter.CreateHistogram<double>("loraengine.inter_token_latency", "s", "Time between output tokens");
        _e2e = _meter.CreateHistogram<double>("loraengine.request_latency", "s", "End-to-end request latency");
        _stepHost = _meter.CreateHistogram<double>("loraengine.step_host_time", "s", "Time of a step the host spent on its own work, not waiting for the device");
        _meter.CreateObservableGauge("loraengine.requests_running", () => _last?.NumRunning ?? 0, "requests");
        _meter.CreateObservableGauge("loraengine.requests_waiting", () => _last?.NumWaiting ?? 0, "requests");
        _meter.CreateObservableGauge("loraengine.kv_cache_usage", () => _last?.KvCacheUsage ?? 0, "ratio");
        _meter.CreateObservableGauge("loraengine.lora_adapters_running", () => _last?.RunningLoraAdapters.Count ?? 0, "adapters");
    }

    /// <summary>This engine's meter (tests listen to it alone; the name is shared by every engine in the process).</summary>
    internal Meter Meter => _meter;

    /// <summary>Prompt tokens computed so far (prefill).</summary>
    public long PromptTokens { get; private set; }
    /// <summary>Tokens generated so far.</summary>
    public long GenerationTokens { get; private set; }
    /// <summary>Requests finished so far, for any reason (those the engine failed included).</summary>
    public long RequestsFinished { get; private set; }
    /// <summary>Requests the engine failed: a bad output for one request, or every request when a step failed on the device.</summary>
    public long RequestsFailed { get; private set; }
    /// <summary>Steps run (the stats reported after an abort or an engine failure are not steps).</summary>
    public long Steps { get; private set; }
    /// <summary>Tokens admitted sequences looked up in the prefix cache (vLLM's prefix_cache_queries).</summary>
    public long PrefixCacheQueries { get; private set; }
    /// <summary>Of <see cref="PrefixCacheQueries"/>, the tokens found cached, whose K/V was not computed again (vLLM's prefix_cache_hits).</summary>
    public long PrefixCacheHits { get; private set; }
    /// <summary>The engine's state after the latest step or abort; null before the first.</summary>
    public SchedulerStats? Last => _last;
    /// <summary>Time spent in steps, summed.</summary>
    public TimeSpan StepTime { get; private set; }
    /// <summary>Of <see cref="StepTime"/>, the time the host waited for the device to finish and return the steps' sampled results; the rest was the host's own work (scheduling, packing, launching, updating requests).</summary>
    public TimeSpan DeviceWaitTime { get; private set; }
    /// <summary>Seconds from a request's arrival to its first output token.</summary>
    public LatencyHistogram TimeToFirstToken { get; } = new();
    /// <summary>Seconds between consecutive output tokens of a sequence.</summary>
    public LatencyHistogram InterTokenLatency { get; } = new();
    /// <summary>Seconds from a request's arrival to its end.</summary>
    public LatencyHistogram RequestLatency { get; } = new();

    /// <summary>Adds one step's (or abort's) stats to the totals, histograms and instruments. Thread-safe.</summary>
    public void Record(SchedulerStats scheduler, IterationStats iteration)
    {
        lock (_lock)
        {
            _last = scheduler;
            if (iteration.StepTime > TimeSpan.Zero) Steps++;
            StepTime += iteration.StepTime;
            DeviceWaitTime += iteration.DeviceWait;
            PromptTokens += iteration.PromptTokens;
            GenerationTokens += iteration.GenerationTokens;
            RequestsFinished += iteration.FinishedRequests;
            RequestsFailed += iteration.FailedRequests;
            PrefixCacheQueries += scheduler.PrefixCacheStats.Queries;
            PrefixCacheHits += scheduler.PrefixCacheStats.Hits;
            foreach (var t in iteration.TimesToFirstToken) TimeToFirstToken.Observe(t.TotalSeconds);
            foreach (var t in iteration.InterTokenLatencies) InterTokenLatency.Observe(t.TotalSeconds);
            foreach (var t in iteration.RequestLatencies) RequestLatency.Observe(t.TotalSeconds);
        }
        _promptTokens.Add(iteration.PromptTokens);
        _generationTokens.Add(iteration.GenerationTokens);
        _finished.Add(iteration.FinishedRequests);
        _failed.Add(iteration.FailedRequests);
        _prefixCacheQueries.Add(scheduler.PrefixCacheStats.Queries);
        _prefixCacheHits.Add(scheduler.PrefixCacheStats.Hits);
        foreach (var t in iteration.TimesToFirstToken) _ttft.Record(t.TotalSeconds);
        foreach (var t in iteration.InterTokenLatencies) _itl.Record(t.TotalSeconds);
        foreach (var t in iteration.RequestLatencies) _e2e.Record(t.TotalSeconds);
        if (iteration.StepTime > TimeSpan.Zero) _stepHost.Record((iteration.StepTime - iteration.DeviceWait).TotalSeconds);
    }

    /// <summary>Disposes the meter: its instruments stop reporting; the totals stay readable.</summary>
    public void Dispose() => _meter.Dispose();
}

/// <summary>A cumulative histogram with Prometheus-style buckets (seconds).</summary>
public sealed class LatencyHistogram
{
    /// <summary>Bucket upper bounds in seconds, ascending (values above the last count only in +Inf, i.e. <see cref="Count"/>).</summary>
    public static readonly double[] Buckets = [0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

    readonly long[] _counts = new long[Buckets.Length];
    readonly object _lock = new();

    /// <summary>Observations so far.</summary>
    public long Count { get; private set; }
    /// <summary>Sum of the observations, in seconds.</summary>
    public double Sum { get; private set; }

    /// <summary>Adds one observation, in seconds. Thread-safe.</summary>
    public void Observe(double seconds)
    {
        lock (_lock)
        {
            Count++;
            Sum += seconds;
            for (int i = 0; i < Buckets.Length; i++) if (seconds <= Buckets[i]) _counts[i]++;
        }
    }

    /// <summary>Cumulative counts per bucket upper bound.</summary>
    public IReadOnlyList<(double Le, long Count)> Snapshot()
    {
        lock (_lock) return Buckets.Select((b, i) => (b, _counts[i])).ToArray();
    }
}
