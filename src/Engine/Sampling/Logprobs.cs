using LoraEngine.Execution;

namespace LoraEngine.Sampling;

/// <summary>Log-softmax of raw logits and the top-k entries with ranks, as vLLM returns them.</summary>
internal static class Logprobs
{
    /// <summary>logprob[i] = logits[i] − log Σ exp(logits), in double for accuracy.</summary>
    public static float[] LogSoftmax(ReadOnlySpan<float> logits)
    {
        double max = double.NegativeInfinity;
        foreach (float v in logits) max = Math.Max(max, v);
        double sum = 0;
        foreach (float v in logits) sum += Math.Exp(v - max);
        double logSum = max + Math.Log(sum);
        var result = new float[logits.Length];
        for (int i = 0; i < logits.Length; i++) result[i] = (float)(logits[i] - logSum);
        return result;
    }

    /// <summary>Rank of a token: 1 + the number of tokens with a strictly higher logprob.</summary>
    public static int Rank(float[] logprobs, int token)
    {
        int rank = 1;
        float v = logprobs[token];
        foreach (float x in logprobs) if (x > v) rank++;
        return rank;
    }

    /// <summary>
    /// The chosen token plus the top k (k = −1: the whole vocabulary), each with its logprob, rank and text.
    /// </summary>
    public static Dictionary<int, Logprob> Entries(float[] logprobs, int chosen, int k, Func<int, string> decode)
    {
        int n = k < 0 ? logprobs.Length : Math.Min(k, logprobs.Length);
        var result = new Dictionary<int, Logprob>();
        if (n > 0)
        {
            var order = Enumerable.Range(0, logprobs.Length).OrderByDescending(i => logprobs[i]).ThenBy(i => i).Take(n);
            int rank = 1;
            foreach (int id in order) result[id] = new Logprob(logprobs[id], rank++, decode(id));
        }
        if (!result.ContainsKey(chosen)) result[chosen] = new Logprob(logprobs[chosen], Rank(logprobs, chosen), decode(chosen));
        return result;
    }

    /// <summary>The entries of a row the device scored: its top n in order (ranks 1…n), plus the chosen token with its own rank.</summary>
    public static Dictionary<int, Logprob> Entries(RowLogprobs row, int chosen, Func<int, string> decode)
    {
        var result = new Dictionary<int, Logprob>();
        for (int j = 0; j < row.TopIds.Length; j++) result[row.TopIds[j]] = new Logprob(row.TopLogprobs[j], j + 1, decode(row.TopIds[j]));
        if (!result.ContainsKey(chosen)) result[chosen] = new Logprob(row.Logprob, row.Rank, decode(chosen));
        return result;
    }
}
