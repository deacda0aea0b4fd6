using LoraEngine.Tensors.Kernels;

namespace LoraEngine.Tensors.Reference;

/// <summary>
/// Plain reference for <see cref="SampleOps"/>: the semantics spelt out by sorting the whole row — candidates in key
/// order (value desc, id asc), min-p, the first k, the shortest prefix whose mass reaches top-p, then the largest race
/// score. Shares only the per-token formulas (SampleMath, Philox) with the implementations it checks.
/// </summary>
public static class SampleReference
{
    /// <summary>
    /// One row's expected result. <paramref name="Fragile"/>: a decision sits within rounding of a boundary (a race
    /// score, a min-p ratio or a top-p prefix sum), so a device whose exp and log differ in the last bits may rightly
    /// pick another token.
    /// </summary>
    public sealed record Result(int Token, bool Finite, float Logprob, int Rank, int[] TopIds, float[] TopLogprobs, bool Fragile);

    /// <summary>The expected result of each row of <paramref name="logits"/> [rows.Count, vocab].</summary>
    /// <param name="logits">the raw logits, row after row</param>
    /// <param name="vocab">row length</param>
    /// <param name="rows">each row's parameters</param>
    /// <param name="edits">the rows' edits, in row order (row r owns the next rows[r].Edits)</param>
    public static Result[] Run(ReadOnlySpan<float> logits, int vocab, IReadOnlyList<SampleRow> rows, IReadOnlyList<TokenEdit> edits)
    {
        var results = new Result[rows.Count];
        int editStart = 0;
        for (int r = 0; r < rows.Count; r++)
        {
            var row = rows[r];
            var raw = logits.Slice(r * vocab, vocab).ToArray();
            var rowEdits = edits.Skip(editStart).Take(row.Edits).ToArray();
            editStart += row.Edits;
            bool fragile = false;
            int token = row.Mode switch
            {
                SampleMode.Argmax => Argmax(raw),
                SampleMode.Score => row.Target,
                _ => Sample(raw, row, rowEdits, out fragile),
            };
            bool finite = raw.All(float.IsFinite);
            results[r] = finite && row.Logprobs >= 0 ? WithLogprobs(raw, token, row.Logprobs, fragile) : new Result(token, finite, 0, 1, [], [], fragile);
        }
        return results;
    }

    /// <summary>Largest value, ties to the lowest id, NaN ignored; 0 when there is none.</summary>
    static int Argmax(float[] x)
    {
        var order = Enumerable.Range(0, x.Length).Where(i => !float.IsNaN(x[i])).OrderByDescending(i => x[i]).ThenBy(i => i);
        return order.DefaultIfEmpty(0).First();
    }

    static int Sample(float[] raw, SampleRow row, TokenEdit[] edits, out bool fragile)
    {
        fragile = false;
        var x = (float[])raw.Clone();
        foreach (var e in edits)
            x[e.TokenId] = SampleMath.Edit(raw[e.TokenId], e.Bias, e.Seen, e.OutputCount, row.RepetitionPenalty, row.PresencePenalty, row.FrequencyPenalty);
        if (row.Temperature == 0) return Argmax(x);

        var v = x.Select(value => value / row.Temperature).ToArray();
        var candidates = Enumerable.Range(0, v.Length).Where(i => v[i] >= -float.MaxValue).OrderByDescending(i => SampleMath.Key(v[i], i)).ToList();
        if (candidates.Count == 0) return 0;
        float max = v[candidates[0]];
        if (row.MinP > 0)
        {
            fragile |= candidates.Any(i => Math.Abs(SampleMath.Relative(v[i], max) - row.MinP) <= 1e-5 * row.MinP);
            candidates = candidates.Where(i => SampleMath.Relative(v[i], max) >= row.MinP).ToList();
        }
        if (row.TopK > 0 && row.TopK < v.Length) candidates = candidates.Take(row.TopK).ToList();
        if (row.TopP < 1)
        {
            var mass = candidates.Select(i => SampleMath.Mass(SampleMath.Relative(v[i], max))).ToArray();
            ulong total = mass.Aggregate(0ul, (a, b) => a + b), target = SampleMath.TopPTarget(row.TopP, total), sum = 0;
            int keep = 0;
            while (keep < candidates.Count && sum < target)
            {
                sum += mass[keep++];
                fragile |= Math.Abs((double)sum - target) <= 1e-5 * total;
            }
            candidates = candidates.Take(Math.Max(keep, 1)).ToList();
        }
        var scored = candidates
            .Select(i => (Id: i, Score: SampleMath.Score(v[i], Philox.Uniform(row.Seed, row.Sequence, row.Position, i))))
            .OrderByDescending(c => c.Score).ThenBy(c => c.Id).ToArray();
        if (scored.Length == 0) return 0;
        if (scored.Length > 1) fragile |= scored[0].Score - scored[1].Score <= 1e-4 * Math.Max(1, Math.Abs(scored[0].Score));
        return scored[0].Id;
    }

    /// <summary>Log-softmax in double: the token's logprob and rank, and the top n by (logprob desc, id asc).</summary>
    static Result WithLogprobs(float[] x, int token, int n, bool fragile)
    {
        double max = x.Max();
        double lse = max + Math.Log(x.Sum(v => Math.Exp(v - max)));
        var top = Enumerable.Range(0, x.Length).OrderByDescending(i => SampleMath.Key(x[i], i)).Take(n).ToArray();
        return new Result(token, true, (float)(x[token] - lse), 1 + x.Count(v => v > x[token]), top, top.Select(i => (float)(x[i] - lse)).ToArray(), fragile);
    }
}
