using LoraEngine.Core;
using LoraEngine.Execution;
using LoraEngine.Tensors.Kernels;

namespace LoraEngine.Sampling;

/// <summary>
/// Turns a sequence's parameters into the device row that samples its next token (see <see cref="SampleOps"/>), as vLLM
/// samples: logit adjustments (bias and bans, <see cref="LogitAdjustments"/>), penalties (repetition over prompt and
/// output, presence and frequency over output), temperature (0 = greedy, ties → lowest id), min-p, top-k, top-p, then
/// a draw keyed by (seed, sequence index, output position) — so a seeded request gets the same tokens in any batch,
/// after preemption, in any process.
/// </summary>
internal static class Sampler
{
    /// <summary>The device row and its edits for <paramref name="seq"/>'s next token.</summary>
    public static RowSampling For(Sequence seq, IReadOnlySet<int> eosIds)
    {
        var p = seq.Request.SamplingParams;
        var edits = Edits(seq, eosIds);
        // Top-n beyond what the device returns (or the whole vocabulary, −1) is computed on the host from the raw row.
        bool rawLogits = p.Logprobs is int k && (k < 0 || k > SampleBatch.MaxLogprobs);
        var mode = p.Temperature == 0 && edits.Count == 0 ? SampleMode.Argmax : SampleMode.Sample;
        // Validated parameters in 32 bits: a tiny positive temperature is raised to vLLM's minimum, a top_p below the
        // smallest float keeps the top token (its meaning at any top_p below that token's probability).
        float temperature = p.Temperature is > 0 and < SamplingParams.MinPositiveTemperature ? (float)SamplingParams.MinPositiveTemperature : (float)p.Temperature;
        float topP = Math.Max((float)p.TopP, float.Epsilon);
        var row = new SampleRow(mode, temperature, p.TopK, topP, (float)p.MinP, seq.Seed, seq.Index, seq.OutputLength,
            (float)p.RepetitionPenalty, (float)p.PresencePenalty, (float)p.FrequencyPenalty,
            Logprobs: rawLogits ? -1 : p.Logprobs ?? -1, Edits: edits.Count);
        return new RowSampling(row, edits, rawLogits);
    }

    /// <summary>
    /// One edit per distinct token whose logit changes: the sum of its adjustments as the bias, and — when a penalty is
    /// on — whether it was seen and how often it was generated.
    /// </summary>
    public static IReadOnlyList<TokenEdit> Edits(Sequence seq, IReadOnlySet<int> eosIds)
    {
        var p = seq.Request.SamplingParams;
        var adjustments = LogitAdjustments.For(p, seq.OutputLength, eosIds);
        bool repetition = p.RepetitionPenalty != 1.0, penalties = repetition || p.PresencePenalty != 0 || p.FrequencyPenalty != 0;
        if (adjustments.Count == 0 && !penalties) return [];
        var bias = new Dictionary<int, float>();
        foreach (var a in adjustments) bias[a.TokenId] = bias.GetValueOrDefault(a.TokenId) + a.Bias;
        var edits = new List<TokenEdit>();
        if (penalties)
            foreach (var (token, count) in seq.Counts.OutputCounts)
                if (repetition || count > 0) edits.Add(new TokenEdit(token, bias.Remove(token, out float b) ? b : 0, Seen: true, count));
        foreach (var (token, b) in bias) edits.Add(new TokenEdit(token, b));
        return edits;
    }
}
