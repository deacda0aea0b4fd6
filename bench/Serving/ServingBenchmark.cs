using Microsoft.Extensions.Logging;
using System.Diagnostics;
using LoraEngine.Bench.Tensors;
using LoraEngine.Tensors;

namespace LoraEngine.Bench.Serving;

/// <summary>One serving scenario: batch size, and which adapter each request uses (null = base model).</summary>
public sealed record Scenario(string Name, int Batch, Func<int, int?> AdapterOf, int MaxLoras = 4, int MaxCpuLoras = 4, int Adapters = 4)
{
    /// <summary>Tokens of a system prompt every request's prompt begins with (0: none).</summary>
    public int SharedPrefix { get; init; }

    /// <summary>Tokens of each request's own prompt, after the system prompt; null: the benchmark's PromptTokens.</summary>
    public int? OwnPromptTokens { get; init; }

    /// <summary>Tokens each request generates; null: the benchmark's NewTokens.</summary>
    public int? NewTokens { get; init; }

    /// <summary>The engine's EnablePrefixCaching.</summary>
    public bool PrefixCaching { get; init; } = true;

    /// <summary>Each request is sent when the one before finished (TTFT without queueing), instead of all at once.</summary>
    public bool OneAtATime { get; init; }

    /// <summary>The measured run's system prompt is one the engine has not seen (its warm-up used another), so nothing of it is cached when the run starts.</summary>
    public bool ColdPrefix { get; init; }
}

/// <summary>Measured figures of one scenario.</summary>
public sealed record ScenarioResult(
    string Scenario, int Batch, int PromptTokens, int NewTokens, double Seconds, double TokensPerSecond,
    double TtftP50Ms, double TtftP99Ms, double ItlP50Ms, double ItlP99Ms, double DecodeStepMs,
    long DeviceBytes, double RooflineRatio, double? LoraOverhead)
{
    /// <summary>
    /// Of <see cref="DecodeStepMs"/> (the median decode step), the host's own work: the step's time less the time it
    /// waited for the device (median over decode steps). On the CPU device the kernels run inside their launches, so
    /// this is the whole step there.
    /// </summary>
    public double HostStepMs { get; init; }

    /// <summary>Of <see cref="PromptTokens"/>, the system prompt all requests share.</summary>
    public int SharedPrefixTokens { get; init; }

    /// <summary>Prompt tokens found in the prefix cache over prompt tokens looked up, in the measured run (null: caching off).</summary>
    public double? PrefixCacheHitRate { get; init; }

    /// <summary>TTFT p50 over that of the same prompts with prefix caching off, measured in the same run.</summary>
    public double? TtftVsUncached { get; init; }

    /// <summary>Whether every request generated the tokens it did with prefix caching off (same prompts, same run).</summary>
    public bool? SameTokensAsUncached { get; init; }

    /// <summary>Each request's generated token ids, by its index in the batch (kept for the comparison, not written out).</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public IReadOnlyList<IReadOnlyList<int>> Outputs { get; init; } = [];
}

/// <summary>
/// The serving benchmark: random-weight Llama of a real shape, N random rank-16 adapters on all seven projections,
/// prompts of 128 random tokens, 128 greedy new tokens with EOS ignored. Throughput counts batch × new tokens over the
/// whole run (prefill included), as the peers' figures do. The roofline ratio is (weight bytes + KV bytes a decode step
/// reads) / decode step time over the device copy bandwidth measured in the same run.
/// The prefix scenarios send 32 requests over 4 adapters whose prompts begin with one system prompt, then 64 tokens of
/// their own (--own-prompt): with prefix caching off, with it on but the system prompt new to the engine (cold: the first request of
/// each adapter computes it, the others read its blocks), and with it cached (the warm-up sent it with other own
/// tokens, as earlier traffic would have); all at once (TTFT includes waiting for the others' prefill) and one at a
/// time. TTFT is compared with the uncached run's of the same kind.
/// </summary>
public sealed class ServingBenchmark(string modelDir, Func<int, string> adapterDir, string device, TextWriter log)
{
    public int PromptTokens { get; init; } = 128;
    public int NewTokens { get; init; } = 128;

    /// <summary>Ranks the engine shards the model over (--tensor-parallel-size): rank r on device r of the kind.</summary>
    public int TensorParallelSize { get; init; } = 1;

    /// <summary>vLLM's fully_sharded_loras under tensor parallelism (--fully-sharded-loras).</summary>
    public bool FullyShardedLoras { get; init; }

    /// <summary>The scenarios; the prefix ones with a system prompt of <paramref name="systemPrompt"/> tokens, then <paramref name="ownPrompt"/> of each request's own.</summary>
    public static IReadOnlyList<Scenario> Scenarios(bool quick, int systemPrompt, int ownPrompt = 64)
    {
        var prefix = new Scenario($"prefix {systemPrompt} cached", quick ? 8 : 32, i => i % 4 + 1) { SharedPrefix = systemPrompt, OwnPromptTokens = ownPrompt, NewTokens = 16 };
        return
        [
            new("bs1 base", 1, _ => null),
            new("bs1 one adapter", 1, _ => 1),
            new("bs32 base", quick ? 8 : 32, _ => null),
            new("bs32 one adapter", quick ? 8 : 32, _ => 1),
            new("bs32 four mixed adapters", quick ? 8 : 32, i => i % 4 + 1),
            new("bs32 four mixed + base", quick ? 8 : 32, i => i % 5 == 4 ? null : i % 5 + 1),
            new("64 adapters via CPU cache (MaxLoras 8)", quick ? 16 : 64, i => i + 1, MaxLoras: 8, MaxCpuLoras: quick ? 16 : 64, Adapters: quick ? 16 : 64),
            prefix with { Name = $"prefix {systemPrompt} uncached", PrefixCaching = false },
            prefix with { Name = $"prefix {systemPrompt} cold", ColdPrefix = true },
            prefix,
            prefix with { Name = $"prefix {systemPrompt} one at a time uncached", PrefixCaching = false, OneAtATime = true },
            prefix with { Name = $"prefix {systemPrompt} one at a time cached", OneAtATime = true },
        ];
    }

    int PromptLength(Scenario s) => s.SharedPrefix + (s.OwnPromptTokens ?? PromptTokens);

    int NewTokensOf(Scenario s) => s.NewTokens ?? NewTokens;

    public IReadOnlyList<ScenarioResult> Run(IReadOnlyList<Scenario> scenarios, double copyGBps)
    {
        var results = new List<ScenarioResult>();
        var baseTps = new Dictionary<int, double>();
        var uncached = new Dictionary<(int Batch, int Prompt, bool OneAtATime), ScenarioResult>();
        foreach (var group in scenarios.GroupBy(s => (s.MaxLoras, s.MaxCpuLoras, s.PrefixCaching, MaxModelLen: PromptLength(s) + NewTokensOf(s) + 16)))
        {
            using var engine = LlmEngine.FromEngineArgs(new EngineArgs
            {
                Model = modelDir, Device = device, EnableLora = true, MaxLoras = group.Key.MaxLoras, MaxCpuLoras = group.Key.MaxCpuLoras,
                MaxLoraRank = 16, MaxNumSeqs = 64, MaxNumBatchedTokens = 64 * PromptTokens, MaxModelLen = group.Key.MaxModelLen,
                EnablePrefixCaching = group.Key.PrefixCaching, DisableLogStats = true, Dtype = "auto", LoggerFactory = new LineLoggerFactory(log),
                TensorParallelSize = TensorParallelSize, FullyShardedLoras = FullyShardedLoras,
            });
            log.WriteLine($"engine: {engine.MemoryPlan}, prefix caching {(group.Key.PrefixCaching ? "on" : "off")}" +
                          (TensorParallelSize > 1 ? $", tensor parallel over {engine.DeviceName}, fully sharded LoRA {(FullyShardedLoras ? "on" : "off")}" : ""));
            foreach (var scenario in group)
            {
                // Warm-up as the peer does (it generates its batch twice): the scenario's adapters are read and its
                // batch's graphs captured before the measured run. Its prompts are others than the measured run's, so
                // the prefix cache holds nothing of them but a shared system prompt.
                RunOnce(engine, scenario with { Name = $"warm-up {scenario.Name}" }, newTokens: 4, warmUp: true);
                var r = RunOnce(engine, scenario, NewTokensOf(scenario), warmUp: false);
                double? overhead = baseTps.TryGetValue(scenario.Batch, out var b) && scenario.Name.Contains("adapter") ? 1 - r.TokensPerSecond / b : null;
                if (scenario.Name.EndsWith("base")) baseTps[scenario.Batch] = r.TokensPerSecond;
                var key = (scenario.Batch, PromptLength(scenario), scenario.OneAtATime);
                if (scenario.SharedPrefix > 0 && !scenario.PrefixCaching) uncached[key] = r;
                var u = scenario.PrefixCaching && uncached.TryGetValue(key, out var off) ? off : null;
                double? vsUncached = u is null ? null : r.TtftP50Ms / u.TtftP50Ms;
                bool? sameTokens = u is null || scenario.ColdPrefix ? null : r.Outputs.Zip(u.Outputs).All(p => p.First.SequenceEqual(p.Second));
                double bytesPerStep = engine.MemoryPlan.WeightBytes + KvBytesPerStep(engine, scenario);
                var result = r with
                {
                    RooflineRatio = bytesPerStep / (r.DecodeStepMs * 1e6) / copyGBps, LoraOverhead = overhead, TtftVsUncached = vsUncached, SameTokensAsUncached = sameTokens,
                };
                results.Add(result);
                log.WriteLine($"{scenario.Name,-42} {result.TokensPerSecond,9:F1} tok/s  TTFT p50 {result.TtftP50Ms,8:F1} ms  ITL p50 {result.ItlP50Ms,7:F2} ms  " +
                              $"step {result.DecodeStepMs,7:F2} ms (host {result.HostStepMs:F3})  roofline {result.RooflineRatio:F2}{(overhead is double o ? $"  LoRA overhead {o:P1}" : "")}" +
                              $"{(result.PrefixCacheHitRate is double h ? $"  prefix hits {h:P1}" : "")}{(vsUncached is double v ? $"  TTFT p50 {v:F3}× uncached" : "")}" +
                              $"{(sameTokens is bool same ? same ? ", same tokens" : ", TOKENS DIFFER from uncached" : "")}");
            }
        }
        return results;
    }

    /// <summary>KV bytes a decode step reads at mid-generation: every running sequence's cached positions, all layers, K and V.</summary>
    double KvBytesPerStep(LlmEngine engine, Scenario scenario)
    {
        var c = engine.ModelConfig;
        double positions = PromptLength(scenario) + NewTokensOf(scenario) / 2.0;
        // Under tensor parallelism a rank reads its KV heads only (the roofline is rank 0's: its bytes over one device's bandwidth).
        return (scenario.OneAtATime ? 1 : scenario.Batch) * positions * 2.0 * c.NumHiddenLayers * c.KvSize * sizeof(float) / engine.MemoryPlan.TensorParallelSize;
    }

    ScenarioResult RunOnce(LlmEngine engine, Scenario scenario, int newTokens, bool warmUp)
    {
        // Own tokens differ between scenarios and between a scenario's warm-up and measured run, so the prefix cache never
        // holds a measured prompt beyond the system prompt it is meant to hold; the prefix scenarios of one kind (all at
        // once, one at a time) share theirs, so the cached run's tokens can be compared with the uncached run's.
        string promptKey = scenario.SharedPrefix > 0 ? $"{(warmUp ? "warm-up " : "")}prefix, one at a time: {scenario.OneAtATime}" : scenario.Name; // warm-ups: "warm-up NAME"
        var rnd = new Random(StableHash(promptKey));
        int[] RandomTokens(Random r, int n) => Enumerable.Range(0, n).Select(_ => r.Next(2, engine.ModelConfig.VocabSize)).ToArray();
        var system = RandomTokens(new Random(scenario.ColdPrefix && !warmUp ? 102 : 101), scenario.SharedPrefix);
        var sampling = new SamplingParams { Temperature = 0, MaxTokens = newTokens, IgnoreEos = true };
        var (queries, hits) = (engine.Metrics.PrefixCacheQueries, engine.Metrics.PrefixCacheHits);
        var added = new Dictionary<string, Stopwatch>();
        var firstToken = new Dictionary<string, double>();
        var gaps = new List<double>();
        var lastSeen = new Dictionary<string, (double Ms, int Tokens)>();
        var finalTokens = new Dictionary<string, IReadOnlyList<int>>();
        var decodeSteps = new List<double>();
        var hostSteps = new List<double>();
        var clock = Stopwatch.StartNew();
        for (int i = 0; i < scenario.Batch; i++)
        {
            int[] ids = [.. system, .. RandomTokens(rnd, scenario.OwnPromptTokens ?? PromptTokens)];
            int? adapter = scenario.AdapterOf(i);
            var lora = adapter is int a ? new LoraRequest($"bench-{a}", a, adapterDir(a)) : null;
            engine.AddRequest($"{scenario.Name}/{i}", ids, sampling, lora);
            added[$"{scenario.Name}/{i}"] = Stopwatch.StartNew();
            if (scenario.OneAtATime || i == scenario.Batch - 1) Drain();
        }
        void Drain()
        {
            while (engine.HasUnfinishedRequests) Step();
        }
        void Step()
        {
            var waited = engine.Metrics.DeviceWaitTime;
            var stepClock = Stopwatch.StartNew();
            var outputs = engine.Step();
            double stepMs = stepClock.Elapsed.TotalMilliseconds;
            double hostMs = stepMs - (engine.Metrics.DeviceWaitTime - waited).TotalMilliseconds;
            // A decode-only step: every request that advanced already had its first token (no prefill finished in it).
            bool decodeOnly = outputs.Count > 0 && outputs.All(o => firstToken.ContainsKey(o.RequestId));
            if (decodeOnly)
            {
                decodeSteps.Add(stepMs);
                hostSteps.Add(hostMs);
            }
            double now = clock.Elapsed.TotalMilliseconds;
            foreach (var o in outputs)
            {
                int tokens = o.Outputs[0].TokenIds.Count;
                if (tokens > 0 && !firstToken.ContainsKey(o.RequestId)) firstToken[o.RequestId] = added[o.RequestId].Elapsed.TotalMilliseconds;
                if (lastSeen.TryGetValue(o.RequestId, out var prev) && tokens > prev.Tokens) gaps.Add((now - prev.Ms) / (tokens - prev.Tokens));
                lastSeen[o.RequestId] = (now, tokens);
                if (o.Finished) finalTokens[o.RequestId] = o.Outputs[0].TokenIds;
            }
        }
        double seconds = clock.Elapsed.TotalSeconds;
        var ttft = firstToken.Values.Order().ToArray();
        var itl = gaps.Order().ToArray();
        queries = engine.Metrics.PrefixCacheQueries - queries;
        hits = engine.Metrics.PrefixCacheHits - hits;
        return new ScenarioResult(scenario.Name, scenario.Batch, PromptLength(scenario), newTokens, seconds, scenario.Batch * newTokens / seconds,
            Percentile(ttft, 0.5), Percentile(ttft, 0.99), Percentile(itl, 0.5), Percentile(itl, 0.99),
            decodeSteps.Count > 0 ? Percentile(decodeSteps.Order().ToArray(), 0.5) : double.NaN,
            engine.MemoryPlan.WeightBytes + engine.MemoryPlan.LoraSlotBytes + engine.MemoryPlan.ActivationBytes + engine.MemoryPlan.KvCacheBytes,
            0, null)
        {
            HostStepMs = hostSteps.Count > 0 ? Percentile(hostSteps.Order().ToArray(), 0.5) : double.NaN,
            SharedPrefixTokens = scenario.SharedPrefix,
            PrefixCacheHitRate = queries > 0 ? (double)hits / queries : null,
            Outputs = Enumerable.Range(0, scenario.Batch).Select(i => finalTokens[$"{scenario.Name}/{i}"]).ToArray(),
        };
    }

    /// <summary>FNV-1a of the name (string.GetHashCode differs from process to process).</summary>
    static int StableHash(string name)
    {
        uint h = 2166136261;
        foreach (char c in name) h = (h ^ c) * 16777619;
        return (int)(h & 0x3FFFFFFF);
    }

    static double Percentile(double[] sorted, double p) => sorted.Length == 0 ? double.NaN : sorted[Math.Min(sorted.Length - 1, (int)(p * sorted.Length))];

    /// <summary>Device copy bandwidth over a 1 GiB (GPU) or 256 MiB (CPU) buffer, bytes read + written per second.</summary>
    public static double MeasureCopyGBps(ComputeDevice device) => LinearBench.CopyGBps(device, device.IsCpu ? 256L << 20 : 1L << 30, quick: false);
}

/// <summary>Writes the engine's informational log lines (graph captures, model load) into the benchmark's log.</summary>
sealed class LineLoggerFactory(TextWriter log) : ILoggerFactory, ILogger
{
    public ILogger CreateLogger(string categoryName) => this;
    public void AddProvider(ILoggerProvider provider) { }
    public void Dispose() { }
    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
    public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Information;
    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        if (IsEnabled(logLevel)) log.WriteLine($"  [{logLevel}] {formatter(state, exception)}");
    }
}
