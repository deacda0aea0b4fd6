namespace LoraEngine.Sampling;

/// <summary>
/// Picks the next token from one row of logits on the host, as vLLM does: logit adjustments (bias and bans, see
/// <see cref="LogitAdjustments"/>), penalties (repetition over prompt and output, presence and frequency over output),
/// then temperature (0 = greedy argmax, ties → lowest id), top-k, top-p and min-p, then a draw from the sequence's own
/// RNG (so a seeded request gets the same tokens in any batch).
/// </summary>
internal static class Sampler
{
    /// <summary>
    /// Whether sampling the next token of a sequence needs its logits on the host; false for plain greedy decoding
    /// (no logit adjustments, no penalties, no logprobs), where the device's argmax is the answer.
    /// </summary>
    public static bool NeedsLogits(SamplingParams p, int outputLength) =>
        p.Temperature != 0 || p.Logprobs is not null || p.RepetitionPenalty != 1.0 || p.PresencePenalty != 0
        || p.FrequencyPenalty != 0 || outputLength < p.MinTokens || p.LogitBias is { Count: > 0 };

    /// <summary>logits[a.TokenId] += a.Bias for every adjustment (a ban adds −∞).</summary>
    public static void ApplyLogitAdjustments(Span<float> logits, IReadOnlyList<LogitAdjustment> adjustments)
    {
        foreach (var a in adjustments) logits[a.TokenId] += a.Bias;
    }

    /// <summary>Applies repetition, presence and frequency penalties in place.</summary>
    public static void ApplyPenalties(Span<float> logits, SamplingParams p, IReadOnlyList<int> tokens, int promptLength)
    {
        if (p.RepetitionPenalty != 1.0)
        {
            var seen = new HashSet<int>(tokens);
            foreach (int id in seen)
                logits[id] = logits[id] > 0 ? (float)(logits[id] / p.RepetitionPenalty) : (float)(logits[id] * p.RepetitionPenalty);
        }
        if (p.PresencePenalty != 0 || p.FrequencyPenalty != 0)
        {
            var counts = new Dictionary<int, int>();
            for (int i = promptLength; i < tokens.Count; i++) counts[tokens[i]] = counts.GetValueOrDefault(tokens[i]) + 1;
            foreach (var (id, count) in counts)
                logits[id] -= (float)(p.FrequencyPenalty * count + p.PresencePenalty);
        }
    }

    /// <summary>The next token: greedy at temperature 0, else a draw after temperature, top-k, top-p and min-p.</summary>
    public static int Sample(ReadOnlySpan<float> logits, SamplingParams p, Random random)
    {
        if (p.Temperature == 0) return ArgMax(logits);

        // Candidates sorted by logit (desc, then id) — sorting the whole vocabulary keeps the semantics plain.
        int vocab = logits.Length;
        var ids = new int[vocab];
        var values = new double[vocab];
        for (int i = 0; i < vocab; i++)
        {
            ids[i] = i;
            values[i] = logits[i] / p.Temperature;
        }
        Array.Sort(values.Select(v => -v).ToArray(), ids);
        int keep = p.TopK > 0 ? Math.Min(p.TopK, vocab) : vocab;

        // Softmax over the top-k candidates.
        double max = values[ids[0]];
        var probs = new double[keep];
        double sum = 0;
        for (int i = 0; i < keep; i++)
        {
            probs[i] = double.IsNegativeInfinity(values[ids[i]]) ? 0 : Math.Exp(values[ids[i]] - max);
            sum += probs[i];
        }
        for (int i = 0; i < keep; i++) probs[i] /= sum;

        // top-p: the smallest prefix whose mass reaches p (at least one token).
        if (p.TopP < 1)
        {
            double mass = 0;
            int n = 0;
            while (n < keep && (n == 0 || mass < p.TopP)) mass += probs[n++];
            keep = n;
        }
        // min-p: drop tokens below min_p × the top probability.
        if (p.MinP > 0)
        {
            double floor = p.MinP * probs[0];
            int n = 1;
            while (n < keep && probs[n] >= floor) n++;
            keep = n;
        }

        double total = 0;
        for (int i = 0; i < keep; i++) total += probs[i];
        double u = random.NextDouble() * total;
        for (int i = 0; i < keep; i++)
        {
            u -= probs[i];
            if (u < 0) return ids[i];
        }
        return ids[keep - 1];
    }

    public static int ArgMax(ReadOnlySpan<float> logits)
    {
        int best = 0;
        for (int i = 1; i < logits.Length; i++)
            if (logits[i] > logits[best]) best = i;
        return best;
    }
}
