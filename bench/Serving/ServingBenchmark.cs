using Microsoft.Extensions.Logging;
using System.Diagnostics;
using LoraEngine.Bench.Tensors;
using LoraEngine.Tensors;

namespace LoraEngine.Bench.Serving;

/// <summary>One serving scenario: batch size, and which adapter each request uses (null = base model).</summary>
public sealed record Scenario(string Name, int Batch, Func<int, int?> AdapterOf, int MaxLoras = 4, int MaxCpuLoras = 4, int Adapters = 4);

/// <summary>Measured figures of one scenario.</summary>
public sealed record ScenarioResult(
    string Scenario, int Batch, int PromptTokens, int NewTokens, double Seconds, double TokensPerSecond,
    double TtftP50Ms, double TtftP99Ms, double ItlP50Ms, double ItlP99Ms, double DecodeStepMs,
    long DeviceBytes, double RooflineRatio, double? LoraOverhead);

/// <summary>
/// The serving benchmark: random-weight Llama of a real shape, N random rank-16 adapters on all seven projections,
/// prompts of 128 random tokens, 128 greedy new tokens with EOS ignored. Throughput counts batch × new tokens over the
/// whole run (prefill included), as the peers' figures do. The roofline ratio is (weight bytes + KV bytes a decode step
/// reads) / decode step time over the device copy bandwidth measured in the same run.
/// </summary>
public sealed class ServingBenchmark(string modelDir, Func<int, string> adapterDir, string device, TextWriter log)
{
    public int PromptTokens { get; init; } = 128;
    public int NewTokens { get; init; } = 128;

    public static IReadOnlyList<Scenario> Scenarios(bool quick) =>
    [
        new("bs1 base", 1, _ => null),
        new("bs1 one adapter", 1, _ => 1),
        new("bs32 base", quick ? 8 : 32, _ => null),
        new("bs32 one adapter", quick ? 8 : 32, _ => 1),
        new("bs32 four mixed adapters", quick ? 8 : 32, i => i % 4 + 1),
        new("bs32 four mixed + base", quick ? 8 : 32, i => i % 5 == 4 ? null : i % 5 + 1),
        new("64 adapters via CPU cache (MaxLoras 8)", quick ? 16 : 64, i => i + 1, MaxLoras: 8, MaxCpuLoras: quick ? 16 : 64, Adapters: quick ? 16 : 64),
    ];

    public IReadOnlyList<ScenarioResult> Run(IReadOnlyList<Scenario> scenarios, double copyGBps)
    {
        var results = new List<ScenarioResult>();
        var baseTps = new Dictionary<int, double>();
        foreach (var group in scenarios.GroupBy(s => (s.MaxLoras, s.MaxCpuLoras)))
        {
            using var engine = LlmEngine.FromEngineArgs(new EngineArgs
            {
                Model = modelDir, Device = device, EnableLora = true, MaxLoras = group.Key.MaxLoras, MaxCpuLoras = group.Key.MaxCpuLoras,
                MaxLoraRank = 16, MaxNumSeqs = 64, MaxNumBatchedTokens = 64 * PromptTokens, MaxModelLen = PromptTokens + NewTokens + 16,
                DisableLogStats = true, Dtype = "auto", LoggerFactory = new LineLoggerFactory(log),
            });
            log.WriteLine($"engine: {engine.MemoryPlan}");
            foreach (var scenario in group)
            {
                // Warm-up as the peer does (it generates its batch twice): the scenario's adapters are read and its
                // batch's graphs captured before the measured run.
                RunOnce(engine, scenario with { Name = $"warm-up {scenario.Name}" }, newTokens: 4);
                var r = RunOnce(engine, scenario, NewTokens);
                double? overhead = baseTps.TryGetValue(scenario.Batch, out var b) && scenario.Name.Contains("adapter") ? 1 - r.TokensPerSecond / b : null;
                if (scenario.Name.EndsWith("base")) baseTps[scenario.Batch] = r.TokensPerSecond;
                double bytesPerStep = engine.MemoryPlan.WeightBytes + KvBytesPerStep(engine, scenario.Batch);
                var result = r with { RooflineRatio = bytesPerStep / (r.DecodeStepMs * 1e6) / copyGBps, LoraOverhead = overhead };
                results.Add(result);
                log.WriteLine($"{scenario.Name,-42} {result.TokensPerSecond,9:F1} tok/s  TTFT p50 {result.TtftP50Ms,8:F1} ms  ITL p50 {result.ItlP50Ms,7:F2} ms  " +
                              $"step {result.DecodeStepMs,7:F2} ms  roofline {result.RooflineRatio:F2}{(overhead is double o ? $"  LoRA overhead {o:P1}" : "")}");
            }
        }
        return results;
    }

    /// <summary>KV bytes a decode step reads at mid-generation: every sequence's cached positions, all layers, K and V.</summary>
    double KvBytesPerStep(LlmEngine engine, int batch)
    {
        var c = engine.ModelConfig;
        double positions = PromptTokens + NewTokens / 2.0;
        return batch * positions * 2.0 * c.NumHiddenLayers * c.KvSize * sizeof(float);
    }

    ScenarioResult RunOnce(LlmEngine engine, Scenario scenario, int newTokens)
    {
        var rnd = new Random(7);
        var sampling = new SamplingParams { Temperature = 0, MaxTokens = newTokens, IgnoreEos = true };
        var added = new Dictionary<string, Stopwatch>();
        var firstToken = new Dictionary<string, double>();
        var gaps = new List<double>();
        var lastSeen = new Dictionary<string, (double Ms, int Tokens)>();
        var clock = Stopwatch.StartNew();
        for (int i = 0; i < scenario.Batch; i++)
        {
            var ids = Enumerable.Range(0, PromptTokens).Select(_ => rnd.Next(2, engine.ModelConfig.VocabSize)).ToArray();
            int? adapter = scenario.AdapterOf(i);
            var lora = adapter is int a ? new LoraRequest($"bench-{a}", a, adapterDir(a)) : null;
            engine.AddRequest($"{scenario.Name}/{i}", ids, sampling, lora);
            added[$"{scenario.Name}/{i}"] = Stopwatch.StartNew();
        }
        var decodeSteps = new List<double>();
        while (engine.HasUnfinishedRequests)
        {
            var stepClock = Stopwatch.StartNew();
            var outputs = engine.Step();
            double stepMs = stepClock.Elapsed.TotalMilliseconds;
            // A decode-only step: every request that advanced already had its first token (no prefill finished in it).
            bool decodeOnly = outputs.Count > 0 && outputs.All(o => firstToken.ContainsKey(o.RequestId));
            if (decodeOnly) decodeSteps.Add(stepMs);
            double now = clock.Elapsed.TotalMilliseconds;
            foreach (var o in outputs)
            {
                int tokens = o.Outputs[0].TokenIds.Count;
                if (tokens > 0 && !firstToken.ContainsKey(o.RequestId)) firstToken[o.RequestId] = added[o.RequestId].Elapsed.TotalMilliseconds;
                if (lastSeen.TryGetValue(o.RequestId, out var prev) && tokens > prev.Tokens) gaps.Add((now - prev.Ms) / (tokens - prev.Tokens));
                lastSeen[o.RequestId] = (now, tokens);
            }
        }
        double seconds = clock.Elapsed.TotalSeconds;
        var ttft = firstToken.Values.Order().ToArray();
        var itl = gaps.Order().ToArray();
        return new ScenarioResult(scenario.Name, scenario.Batch, PromptTokens, newTokens, seconds, scenario.Batch * newTokens / seconds,
            Percentile(ttft, 0.5), Percentile(ttft, 0.99), Percentile(itl, 0.5), Percentile(itl, 0.99),
            decodeSteps.Count > 0 ? Percentile(decodeSteps.Order().ToArray(), 0.5) : double.NaN,
            engine.MemoryPlan.WeightBytes + engine.MemoryPlan.LoraSlotBytes + engine.MemoryPlan.ActivationBytes + engine.MemoryPlan.KvCacheBytes,
            0, null);
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
