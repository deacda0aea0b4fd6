using LoraEngine.Execution;
using Xunit;

namespace LoraEngine.Engine.Tests.Execution;

/// <summary>
/// Sampling happens on the device: every sampling feature at once adds to a decode step's managed allocations (on the
/// calling thread, where the runner and the CPU device's sampler run) less than a quarter of one copy of the batch's
/// logits — small per-row objects, nothing per vocabulary entry (the host sampler copied each sampled row several times).
/// </summary>
public class StepAllocationTests
{
    sealed class Meter(IModelRunner inner) : IModelRunner
    {
        public readonly List<(int Rows, long Bytes)> DecodeSteps = new();

        public TimeSpan DeviceWait => inner.DeviceWait;

        public IReadOnlyList<ExecutionResult> Execute(IReadOnlyList<ExecutionItem> items)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            var results = inner.Execute(items);
            long bytes = GC.GetAllocatedBytesForCurrentThread() - before;
            if (items.All(i => i.TokenIds.Count == 1)) DecodeSteps.Add((items.Count, bytes));
            return results;
        }

        public void Dispose() => inner.Dispose();
    }

    /// <summary>
    /// The bytes a steady decode step of 8 sequences allocates, sampled with <paramref name="p"/> (the median over the
    /// steps: an allocation per step shows in every one, while a one-off — a list growing, a lazily built object, on a
    /// loaded CI machine once 9.6 KB in one step of eleven — shows in one), and the vocabulary.
    /// </summary>
    static (long Bytes, int Vocab) DecodeStepBytes(SamplingParams p)
    {
        using var engine = LlmEngine.FromEngineArgs(EngineFactory.Args());
        var meter = new Meter(engine.Core.Runner);
        engine.Core.Runner = meter;
        for (int i = 0; i < 8; i++) engine.AddRequest($"r{i}", "Vim is", p with { Seed = i });
        EngineFactory.RunToCompletion(engine);
        var steady = meter.DecodeSteps.Where(s => s.Rows == 8).Skip(2).ToArray(); // after the first steps' one-time work
        Assert.NotEmpty(steady);
        var bytes = steady.Select(s => s.Bytes).Order().ToArray();
        return (bytes[bytes.Length / 2], engine.ModelConfig.VocabSize);
    }

    [Fact]
    public void Sampling_adds_no_managed_allocation_proportional_to_the_logits()
    {
        var greedy = new SamplingParams { Temperature = 0, MaxTokens = 12, IgnoreEos = true };
        var sampled = greedy with
        {
            Temperature = 0.8, TopK = 50, TopP = 0.9, MinP = 0.01, RepetitionPenalty = 1.1, PresencePenalty = 0.2,
            Logprobs = 5, LogitBias = new Dictionary<int, float> { [42] = 1f },
        };
        var (plain, vocab) = DecodeStepBytes(greedy);
        var (full, _) = DecodeStepBytes(sampled);
        long logitsBytes = 8L * vocab * sizeof(float);
        Assert.True(full - plain < logitsBytes / 4,
            $"a sampled decode step of 8 rows allocated {full} bytes, a greedy one {plain}; one copy of their logits is {logitsBytes}");
    }
}
