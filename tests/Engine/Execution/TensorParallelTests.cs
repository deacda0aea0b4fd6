using LoraEngine.Execution;
using LoraEngine.Lora;
using LoraEngine.Models.Safetensors;
using LoraEngine.Tensors.Kernels;
using LoraEngine.TestSupport;
using Xunit;

namespace LoraEngine.Engine.Tests.Execution;

/// <summary>
/// Tensor parallelism over two CPU devices (two ranks in this process) computes what one device does: the runner's raw
/// logits of a mixed batch (the base model and every fixture adapter side by side, prefill then decode steps) differ
/// from the single device's by at most 1e-5 of each row's largest logit, the greedy tokens are the same, and the
/// engine's greedy continuations (through preemption) equal the goldens — with FullyShardedLoras off and on.
/// </summary>
public class TensorParallelTests
{
    const double LogitTolerance = 1e-5;
    static readonly string[] s_cases = ["base", .. EngineFactory.Adapters];

    static EngineArgs Args(int ranks, bool fullySharded, string model = "vim-tiny") => EngineFactory.Args(model) with
    {
        Device = "cpu", TensorParallelSize = ranks, FullyShardedLoras = fullySharded, MaxLoras = 3, MaxModelLen = 128, EnforceEager = true,
    };

    static int[] Ids(SafetensorsFile golden, string name) => golden.ReadInt64(name).Select(v => (int)v).ToArray();

    /// <summary>
    /// The runner's raw logits for every case × 2 prompts in one batch: every prompt row at prefill, then the sampled
    /// row of 3 greedy decode steps. Returns the logits of every step concatenated, and the greedy tokens.
    /// </summary>
    static (float[] Logits, int[] Tokens) RunnerLogits(LlmEngine engine, SafetensorsFile golden)
    {
        var adapters = s_cases.Select((c, i) => i == 0 ? null : engine.LoraManager!.Load(c, i, Fixtures.Adapter(c))).ToArray();
        var prompts = Enumerable.Range(0, 2).Select(i => Ids(golden, $"prompt{i}.ids")).ToArray();
        var sequences = (from c in Enumerable.Range(0, s_cases.Length) from p in prompts select (Adapter: adapters[c], Tokens: p.ToList())).ToArray();
        var sample = new RowSampling(SampleRow.Greedy, [], RawLogits: true);
        var logits = new List<float>();
        var tokens = new List<int>();
        for (int step = 0; step < 4; step++)
        {
            var items = sequences.Select((s, i) =>
            {
                int start = step == 0 ? 0 : s.Tokens.Count - 1;
                var feed = s.Tokens.Skip(start).ToArray();
                var scoring = step == 0 ? new PromptScoring(Enumerable.Repeat(-1, feed.Length).ToArray(), TopN: 0, RawLogits: true) : null;
                return new ExecutionItem(feed, start, Enumerable.Range(4 * i, 4).ToArray(), s.Adapter, sample, scoring);
            }).ToArray();
            var results = engine.Core.Runner.Execute(items);
            for (int i = 0; i < sequences.Length; i++)
            {
                logits.AddRange(results[i].AllLogits ?? results[i].LastLogits!);
                tokens.Add(results[i].Sampled!.Token);
                sequences[i].Tokens.Add(results[i].Sampled!.Token);
            }
        }
        return (logits.ToArray(), tokens.ToArray());
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Two_cpu_ranks_give_the_single_device_logits_and_tokens(bool fullySharded)
    {
        using var golden = SafetensorsFile.Open(Fixtures.Golden("vim-tiny.safetensors"));
        float[] single, parallel;
        int[] singleTokens, parallelTokens;
        using (var one = LlmEngine.FromEngineArgs(Args(1, fullySharded))) (single, singleTokens) = RunnerLogits(one, golden);
        using (var two = LlmEngine.FromEngineArgs(Args(2, fullySharded)))
        {
            var runner = (ModelExecutor)two.Core.Runner;
            Assert.Equal(2, runner.Ranks);
            // Rank 0's shares: q_proj's A whole (16 rank rows) or, fully sharded, its 8 rows, and B's rows of its 128
            // outputs; o_proj's A over its 128 input columns, and B whole (256 rows) or, fully sharded, its 128 rows.
            var (q, o) = ((LoraLinear)runner.Model.Layers[0].QProj, (LoraLinear)runner.Model.Layers[0].OProj);
            Assert.Equal((fullySharded ? 8 : 16, 256, 128), (q.A.Dim(1), q.A.Dim(2), q.B.Dim(1)));
            Assert.Equal((16, 128, fullySharded ? 128 : 256), (o.A.Dim(1), o.A.Dim(2), o.B.Dim(1)));
            (parallel, parallelTokens) = RunnerLogits(two, golden);
        }
        Assert.Equal(single.Length, parallel.Length);
        // Row-parallel o/down add two partial sums where one device accumulates in one go: float32 rounding in another
        // order, a few ulps of the row's largest logit. So the bound is per row, on |Δ| over the row's largest |logit|
        // (test-backend-ops' normalised error), and the largest absolute difference is reported beside it.
        int vocab = 1024;
        double maxAbs = 0, maxNormalised = 0;
        for (int row = 0; row < single.Length / vocab; row++)
        {
            var a = single.AsSpan(row * vocab, vocab);
            var b = parallel.AsSpan(row * vocab, vocab);
            double diff = 0, scale = 1;
            for (int j = 0; j < vocab; j++)
            {
                diff = Math.Max(diff, Math.Abs((double)a[j] - b[j]));
                scale = Math.Max(scale, Math.Abs(a[j]));
            }
            maxAbs = Math.Max(maxAbs, diff);
            maxNormalised = Math.Max(maxNormalised, diff / scale);
        }
        TestContext.Current.SendDiagnosticMessage($"fully sharded {fullySharded}: {single.Length / vocab} rows, max |Δlogit| {maxAbs:E2}, max |Δ| / row's max |logit| {maxNormalised:E2}");
        Assert.True(maxNormalised <= LogitTolerance, $"max |Δlogit| / the row's largest |logit| is {maxNormalised:E2} between one and two ranks (max |Δlogit| {maxAbs:E2})");
        Assert.Equal(singleTokens, parallelTokens);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Two_cpu_ranks_generate_the_golden_greedy_continuations(bool fullySharded)
    {
        using var golden = SafetensorsFile.Open(Fixtures.Golden("vim-tiny.safetensors"));
        // A KV pool small enough to force preemption, as the single-device golden test does: every rank drops and
        // recomputes the same blocks.
        using var engine = LlmEngine.FromEngineArgs(Args(2, fullySharded) with { NumGpuBlocksOverride = 20, BlockSize = 8 });
        var sampling = new SamplingParams { Temperature = 0, MaxTokens = 24, IgnoreEos = true };
        for (int c = 0; c < s_cases.Length; c++)
            for (int i = 0; i < 5; i++)
                engine.AddRequest($"{s_cases[c]}/{i}", Ids(golden, $"prompt{i}.ids"), sampling, c == 0 ? null : EngineFactory.Lora(s_cases[c]));
        var outputs = EngineFactory.RunToCompletion(engine);
        for (int c = 0; c < s_cases.Length; c++)
            for (int i = 0; i < 5; i++)
                Assert.Equal(Ids(golden, $"{s_cases[c]}.prompt{i}.greedy"), outputs[$"{s_cases[c]}/{i}"].Outputs[0].TokenIds);
        Assert.True(engine.Metrics.Last!.NumPreemptions > 0, "the small KV pool should have forced preemption");
        Assert.Equal(0, engine.NumUsedKvBlocks);
    }

    [Fact]
    public void Bf16_weights_split_over_two_cpu_ranks_generate_the_golden_continuations()
    {
        using var golden = SafetensorsFile.Open(Fixtures.Golden("vim-tiny-bf16.safetensors"));
        // F32 slots as the goldens' adapters (LoraDtype auto would round them to BF16 like the weights).
        using var engine = LlmEngine.FromEngineArgs(Args(2, fullySharded: true, model: "vim-tiny-bf16") with { LoraDtype = "float32" });
        var sampling = new SamplingParams { Temperature = 0, MaxTokens = 16, IgnoreEos = true };
        string[] cases = ["base", "vim-upper"];
        foreach (var c in cases)
            for (int i = 0; i < 3; i++)
                engine.AddRequest($"{c}/{i}", Ids(golden, $"prompt{i}.ids"), sampling, c == "base" ? null : EngineFactory.Lora(c));
        var outputs = EngineFactory.RunToCompletion(engine);
        foreach (var c in cases)
            for (int i = 0; i < 3; i++)
                Assert.Equal(Ids(golden, $"{c}.prompt{i}.greedy"), outputs[$"{c}/{i}"].Outputs[0].TokenIds);
    }
}
