using System.Text.Json;
using System.Text.Json.Serialization;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Toolchains.InProcess.Emit;
using LoraEngine.Bench.Serving;
using LoraEngine.Bench.Tensors;
using LoraEngine.Tensors;

namespace LoraEngine.Bench;

/// <summary>
/// LoraEngine benchmarks (also run by <c>loraengine bench</c>).
///   tensors [--quick] [--bdn]                                  linear kernels vs device copy bandwidth (CPU: also a
///                                                              layer's linears vs read bandwidth and FMA peak), and
///                                                              device sampling vs the argmax and a read of the logits;
///                                                              on a GPU also decode attention (wide vs split kernels)
///   shapes [--tokens 1,32] [--auto]                            the served linear shapes alone (the model-shape rows of tensors);
///                                                              --auto: only the kernel each shape picks
///   sample [--quick]                                           device sampling alone (the sample rows of tensors)
///   attention [--quick]                                        decode attention alone: 1B and 8B heads, batch 1 and 32,
///                                                              contexts 128/512/2048; the wide and split kernels side by side
///   linear OUT IN TOKENS [auto|split-k|split-k-ahead|split-rows|split-slices|tiles|wgmma-rows|wgmma-slices|wide-rows|wide-slices|wgmma-tiles] one BF16 linear launched 5 times eagerly (for a profiler;
///                                                              on CUDA the tensor-core kernel can be forced)
///   serving [--shape 1b|8b|cpu-peer|small|shipped] [--quick] [--out DIR] [--only NAME,...] [--system-prompt N] [--own-prompt M]
///           [--tensor-parallel-size N] [--fully-sharded-loras]
///                                                              serving scenarios on a random-weight model (shipped: the
///                                                              shipped checkpoint); the prefix scenarios' prompts are a
///                                                              system prompt of N tokens (default 1024 on the 1b shape,
///                                                              else 384) and M of their own (default 64); with
///                                                              --tensor-parallel-size N the engine shards the model over
///                                                              devices 0 … N−1 of LORAENGINE_DEVICE's kind (results
///                                                              written as serving-SHAPE-tpN)
/// LORAENGINE_DEVICE picks the device (default cpu).
/// </summary>
public static class BenchRunner
{
    public static int Run(string[] args)
    {
        var argv = args.ToList();
        var json = new JsonSerializerOptions { WriteIndented = true, NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals };
        string command = argv.Count > 0 ? argv[0] : "tensors";
        bool quick = argv.Contains("--quick");
        string Option(string name, string fallback) => argv.IndexOf(name) is int i and >= 0 && i + 1 < argv.Count ? argv[i + 1] : fallback;
        string outDir = Option("--out", Path.Combine(Directory.GetCurrentDirectory(), "BenchmarkResults"));
        Directory.CreateDirectory(outDir);

        using var device = ComputeDevice.FromEnvironment();
        Console.WriteLine($"device: {device} ({device.MemorySize / (1 << 20)} MiB), {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC");

        switch (command)
        {
            case "tensors" when argv.Contains("--bdn"):
                var config = ManualConfig.CreateMinimumViable().AddJob((quick ? Job.Dry : Job.ShortRun).WithToolchain(InProcessEmitToolchain.Instance));
                BenchmarkRunner.Run<LinearBenchmarks>(config);
                break;
            case "tensors":
                var linear = LinearBench.Run(device, quick, Console.Out);
                if (!device.IsCpu && !quick) linear = [.. linear, .. LinearBench.RunModelShapes(device, Console.Out)];
                double launchUs = LinearBench.LaunchMicroseconds(device);
                Console.WriteLine($"op launch (1-element add, back to back): {launchUs:F1} µs each");
                var cpuLayer = device.IsCpu ? CpuLayerBench.Run(device, quick, Console.Out) : null;
                var sample = SampleBench.Run(device, quick, Console.Out);
                var attention = !device.IsCpu && !quick ? AttentionBench.Run(device, quick, Console.Out) : null;
                File.WriteAllText(Path.Combine(outDir, "tensors.json"), JsonSerializer.Serialize(new { device = device.ToString(), launchMicroseconds = launchUs, results = linear, cpuLayer, sample, attention }, json));
                break;
            case "shapes":
                int[]? shapeTokens = Option("--tokens", "") is { Length: > 0 } list ? list.Split(',').Select(int.Parse).ToArray() : null;
                var shapes = LinearBench.RunModelShapes(device, Console.Out, shapeTokens, eachKernel: !argv.Contains("--auto"));
                File.WriteAllText(Path.Combine(outDir, "shapes.json"), JsonSerializer.Serialize(new { device = device.ToString(), results = shapes }, json));
                break;
            case "sample":
                var sampleOnly = SampleBench.Run(device, quick, Console.Out);
                File.WriteAllText(Path.Combine(outDir, "sample.json"), JsonSerializer.Serialize(new { device = device.ToString(), results = sampleOnly }, json));
                break;
            case "attention":
                var attentionOnly = AttentionBench.Run(device, quick, Console.Out);
                File.WriteAllText(Path.Combine(outDir, "attention.json"), JsonSerializer.Serialize(new { device = device.ToString(), results = attentionOnly }, json));
                break;
            case "linear": // linear OUT IN TOKENS [auto|split-k|split-k-ahead|split-rows|split-slices|tiles|wgmma-rows|wgmma-slices|wide-rows|wide-slices|wgmma-tiles]: one shape's launches, for ncu
                LinearBench.Profile(device, int.Parse(argv[1]), int.Parse(argv[2]), int.Parse(argv[3]), argv.Count > 4 && !argv[4].StartsWith("--") ? argv[4] : "auto", 5, Console.Out);
                break;
            case "serving":
                var shape = BenchShape.Parse(Option("--shape", device.IsCpu ? "small" : "1b"));
                string work = Path.Combine(Path.GetTempPath(), $"loraengine-bench-{shape.Name}");
                string tokenizer = Option("--tokenizer", Path.Combine(AppContext.BaseDirectory, "tokenizer.json"));
                bool written = File.Exists(Path.Combine(work, "model", "model.safetensors"));
                Console.WriteLine(shape == BenchShape.Shipped ? $"the shipped model ({shape.Parameters / 1e6:F1} M parameters), random adapters in {work}"
                    : $"{(written ? "reusing the" : "writing a")} random {shape.Name} model ({shape.Parameters / 1e9:F2} B parameters) {(written ? "in" : "to")} {work}");
                string model = shape == BenchShape.Shipped ? ShippedModel()
                    : written ? Path.Combine(work, "model") : RandomCheckpoint.WriteModel(Path.Combine(work, "model"), shape, tokenizer);
                string AdapterDir(int i)
                {
                    string dir = Path.Combine(work, "adapters", $"a{i}");
                    return File.Exists(Path.Combine(dir, "adapter_config.json")) ? dir : RandomCheckpoint.WriteAdapter(dir, shape, 16, i);
                }
                double copy = ServingBenchmark.MeasureCopyGBps(device);
                Console.WriteLine($"device copy bandwidth: {copy:F1} GB/s");
                int systemPrompt = int.Parse(Option("--system-prompt", shape == BenchShape.Llama32_1B ? "1024" : "384"));
                var scenarios = ServingBenchmark.Scenarios(quick, systemPrompt, int.Parse(Option("--own-prompt", "64")));
                if (Option("--only", "") is { Length: > 0 } only) scenarios = scenarios.Where(s => only.Split(',').Any(o => s.Name.StartsWith(o))).ToList();
                int tensorParallel = int.Parse(Option("--tensor-parallel-size", "1"));
                bool fullySharded = argv.Contains("--fully-sharded-loras");
                var bench = new ServingBenchmark(model, AdapterDir, device.Kind.ToString().ToLowerInvariant(), Console.Out)
                {
                    PromptTokens = int.Parse(Option("--prompt", "128")),
                    NewTokens = quick ? 16 : int.Parse(Option("--new", "128")),
                    TensorParallelSize = tensorParallel,
                    FullyShardedLoras = fullySharded,
                };
                var results = bench.Run(scenarios, copy);
                string name = tensorParallel > 1 ? $"serving-{shape.Name}-tp{tensorParallel}" : $"serving-{shape.Name}";
                File.WriteAllText(Path.Combine(outDir, $"{name}.json"),
                    JsonSerializer.Serialize(new { device = device.ToString(), shape, copyGBps = copy, tensorParallelSize = tensorParallel, fullyShardedLoras = fullySharded, results }, json));
                File.WriteAllText(Path.Combine(outDir, $"{name}.md"), Markdown(results));
                Console.WriteLine(Markdown(results));
                break;
            default:
                Console.Error.WriteLine($"unknown command '{command}': use tensors, attention, linear or serving");
                return 2;
        }
        return 0;
    }

    static string Markdown(IReadOnlyList<ScenarioResult> results) =>
    "| scenario | batch | prompt | tok/s | TTFT p50 / p99 ms | TTFT p50 vs uncached | prefix hits | ITL p50 / p99 ms | decode step ms | host ms | roofline | LoRA overhead | device MiB |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n" +
    string.Concat(results.Select(r => $"| {r.Scenario} | {r.Batch} | {r.PromptTokens} | {r.TokensPerSecond:F1} | {r.TtftP50Ms:F1} / {r.TtftP99Ms:F1} | " +
        $"{(r.TtftVsUncached is double v ? v.ToString("F3") : "")}{(r.SameTokensAsUncached is bool same ? same ? " (same tokens)" : " (TOKENS DIFFER)" : "")} | {(r.PrefixCacheHitRate is double h ? h.ToString("P1") : "")} | {r.ItlP50Ms:F2} / {r.ItlP99Ms:F2} | " +
        $"{r.DecodeStepMs:F2} | {r.HostStepMs:F3} | {r.RooflineRatio:F2} | {(r.LoraOverhead is double o ? o.ToString("P1") : "")} | {r.DeviceBytes / (1 << 20)} |\n"));

    /// <summary>The repository's models/vim-tiny-bf16: searched from the working directory up, then from the executable up.</summary>
    static string ShippedModel()
    {
        foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
            for (var dir = new DirectoryInfo(start); dir != null; dir = dir.Parent)
            {
                string candidate = Path.Combine(dir.FullName, "models", "vim-tiny-bf16");
                if (File.Exists(Path.Combine(candidate, "config.json"))) return candidate;
            }
        throw new DirectoryNotFoundException("the shipped model (models/vim-tiny-bf16) was not found above the working directory or the executable");
    }
}
