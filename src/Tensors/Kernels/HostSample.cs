using static LoraEngine.Tensors.Kernels.SampleBatch;

namespace LoraEngine.Tensors.Kernels;

/// <summary>
/// The CPU device's implementation of <see cref="SampleOps"/>: the kernels' steps for one row at a time, with the same
/// <see cref="SampleMath"/> formulas, the same radix select and the same Philox draws — so the CPU device picks the same
/// tokens as ILGPU's CPU accelerator running the kernels. The log-sum-exp that only feeds logprob values is added in
/// another order than the kernels' tree, so logprobs agree to rounding, not bit for bit.
/// </summary>
internal static class HostSample
{
    /// <summary>Samples every row of the batch, rows spread over the cores (each row's work is its own).</summary>
    public static void Run(SampleBatch batch, DeviceTensor logits)
    {
        var job = RowsJob.ForThisThread;
        job.Batch = batch;
        job.Logits = logits;
        try
        {
            HostParallel.For(batch.Rows, job);
        }
        finally
        {
            job.Batch = null;
            job.Logits = null;
        }
    }

    sealed class RowsJob : HostJob
    {
        [ThreadStatic] static RowsJob? t_job;

        public static RowsJob ForThisThread => t_job ??= new RowsJob();

        public SampleBatch? Batch;
        public DeviceTensor? Logits;

        public override void Run(int row) => Row(Batch!, Logits!.HostSpan<float>(), row);
    }

    static void Row(SampleBatch batch, Span<float> logits, int r)
    {
        var rowInts = batch.RowInts.HostSpan<int>();
        var rowFloats = batch.RowFloats.HostSpan<float>();
        var editInts = batch.EditIntsTensor.HostSpan<int>();
        var editFloats = batch.EditFloatsTensor.HostSpan<float>();
        var outInts = batch.Out.HostSpan<int>();
        var outLogprob = batch.OutLogprob.HostSpan<float>();
        var topIds = batch.TopIds.HostSpan<int>();
        var topLogprobs = batch.TopLogprobs.HostSpan<float>();
        int vocab = batch.Vocab;
        var p = rowInts.Slice(r * IntParams, IntParams);
        var f = rowFloats.Slice(r * FloatParams, FloatParams);
        var x = logits.Slice(r * vocab, vocab);
        var o = outInts.Slice(r * OutInts, OutInts);
        var mode = (SampleMode)p[PMode];
        bool finite = true;
        foreach (float v in x) finite &= SampleMath.IsFinite(v);
        o[OFinite] = finite ? 1 : 0;
        o[ORank] = 1;
        o[OToken] = mode switch
        {
            SampleMode.Sample => SampleRow(x, p, f, editInts, editFloats),
            SampleMode.Score => p[PTarget],
            _ => Argmax(x),
        };
        if (finite && p[PLogprobs] >= 0)
            Logprobs(x, p[PLogprobs], o, ref outLogprob[r], topIds.Slice(r * MaxLogprobs, MaxLogprobs), topLogprobs.Slice(r * MaxLogprobs, MaxLogprobs));
    }

    /// <summary>Index of the largest value (ties: lowest; NaN ignored; none: 0).</summary>
    static int Argmax(ReadOnlySpan<float> x)
    {
        float top = float.NegativeInfinity;
        int best = int.MaxValue;
        for (int i = 0; i < x.Length; i++)
            if (SampleMath.Better(x[i], i, top, best))
            {
                top = x[i];
                best = i;
            }
        return best == int.MaxValue ? 0 : best;
    }

    /// <summary>
    /// One sampled row: the kernels' decisions (top-k, then top-p over the survivors, then the exponential race), made
    /// over a list of the row's candidates instead of the whole vocabulary at every step: the scaled logits are divided
    /// once, each radix pass keeps only the keys still in the running, and only the final candidates get Philox draws.
    /// Same values, same comparisons: the same token as the kernels.
    /// </summary>
    static int SampleRow(Span<float> x, ReadOnlySpan<int> p, ReadOnlySpan<float> f, Span<int> editInts, Span<float> editFloats)
    {
        int start = p[PEditStart], end = start + p[PEditCount];
        for (int e = start; e < end; e++)
        {
            int token = editInts[e * EditInts];
            editFloats[e * EditFloats + 1] = x[token];
            x[token] = SampleMath.Edit(x[token], editFloats[e * EditFloats], editInts[e * EditInts + 2] != 0, editInts[e * EditInts + 1],
                f[PRepetition], f[PPresence], f[PFrequency]);
        }
        float t = f[PTemperature];
        int token0 = t > 0 ? Draw(x, t, f[PTopP], f[PMinP], p[PTopK], (uint)p[PSeedLo] | ((long)p[PSeedHi] << 32), p[PSequence], p[PPosition]) : Argmax(x);
        for (int e = start; e < end; e++) x[editInts[e * EditInts]] = editFloats[e * EditFloats + 1];
        return token0;
    }

    /// <summary>Scaled logits this far below the row's largest have a top-p mass of 0 (e^−23 · 2³² ≈ 0.44 truncates to 0).</summary>
    const float NoMassBelow = 23f;

    /// <summary>Scaled logits this far below the row's largest cannot win the race (19.45 needed, margin for rounding).</summary>
    const float NoChanceBelow = 24f;

    /// <summary>
    /// The most a draw adds to a token's race score, by the draw's top 8 bits: Score(0, u) at the largest u of each of
    /// the 256 ranges (the score grows with u). v + this bounds the token's score without the two logarithms.
    /// </summary>
    static readonly float[] s_mostGain = Enumerable.Range(0, 256)
        .Select(k => SampleMath.Score(0f, Philox.ToUniform(((uint)k << 24) | 0xFFFFFFu))).ToArray();

    /// <summary>Relative slack on that bound, for a logarithm that is not exactly monotonic in its last bit.</summary>
    const float RaceMargin = 1e-3f;

    static int Draw(ReadOnlySpan<float> x, float t, float topP, float minP, int topK, long seed, int sequence, int position)
    {
        var s = Scratch.For(x.Length);
        Span<float> v = s.Values.AsSpan(0, x.Length);
        float max = float.NegativeInfinity;
        for (int i = 0; i < x.Length; i++)
        {
            v[i] = x[i] / t;
            if (v[i] > max) max = v[i];
        }
        // Finite or +∞ (a ban's −∞ and NaN never) and kept by min_p, in id order.
        int n = 0;
        for (int i = 0; i < v.Length; i++)
            if (v[i] >= -float.MaxValue && SampleMath.PassesMinP(v[i], max, minP))
            {
                s.Ids[n] = i;
                s.Keys[n++] = SampleMath.Key(v[i], i);
            }
        ulong floor = 0;
        if (topK > 0) floor = SelectKey(s.Keys.AsSpan(0, n), default, floor, (ulong)topK, s);
        if (topP < 1)
        {
            n = KeepFrom(floor, s, n);
            ulong total = 0;
            // e^(v − max) · 2³² truncates to 0 far below max: no exp needed there (the same 0 the kernels get).
            float massless = max - NoMassBelow;
            for (int j = 0; j < n; j++)
            {
                float vj = v[s.Ids[j]];
                total += s.Masses[j] = vj < massless ? 0 : SampleMath.Mass(SampleMath.Relative(vj, max));
            }
            floor = SelectKey(s.Keys.AsSpan(0, n), s.Masses.AsSpan(0, n), floor, SampleMath.TopPTarget(topP, total), s);
        }
        n = KeepFrom(floor, s, n);
        // The top token is always a candidate and scores at least max − 2.81 (u ≥ 2⁻²⁴: −log u ≤ 16.64); a token scores
        // at most v + 16.64 (u ≤ 1 − 2⁻²⁴: −log u ≥ 5.96e-8). So below max − 19.45 none can win: skip their draws.
        float hopeless = max - NoChanceBelow;
        float best = float.NegativeInfinity;
        int bestIndex = int.MaxValue, quad = -1;
        PhiloxBlock draws = default;
        for (int j = 0; j < n; j++)
        {
            int i = s.Ids[j];
            if (v[i] < hopeless) continue;
            if (i >> 2 != quad) draws = Philox.Draws(seed, sequence, position, quad = i >> 2);
            uint word = Philox.Word(draws, i & 3);
            if (v[i] + s_mostGain[word >> 24] < best - RaceMargin * (1 + Math.Abs(best))) continue; // cannot reach the best: no logarithms
            float score = SampleMath.Score(v[i], Philox.ToUniform(word));
            if (SampleMath.Better(score, i, best, bestIndex))
            {
                best = score;
                bestIndex = i;
            }
        }
        return bestIndex == int.MaxValue ? 0 : bestIndex;
    }

    /// <summary>Keeps the first <paramref name="n"/> candidates whose key is at least <paramref name="floor"/> (in order); returns how many.</summary>
    static int KeepFrom(ulong floor, Scratch s, int n)
    {
        if (floor == 0) return n;
        int kept = 0;
        for (int j = 0; j < n; j++)
            if (s.Keys[j] >= floor)
            {
                s.Ids[kept] = s.Ids[j];
                s.Keys[kept++] = s.Keys[j];
            }
        return kept;
    }

    /// <summary>
    /// SampleOps' radix select, one thread: the largest key K among <paramref name="keys"/> with W(key ≥ K) ≥ target,
    /// W counting 1 per key or the key's mass when <paramref name="masses"/> is given (none: <paramref name="floor"/>).
    /// Each pass looks only at the keys whose higher bytes matched the passes before (copied aside after the first).
    /// </summary>
    static ulong SelectKey(ReadOnlySpan<ulong> keys, ReadOnlySpan<ulong> masses, ulong floor, ulong target, Scratch s)
    {
        bool weighted = !masses.IsEmpty;
        Span<uint> counts = stackalloc uint[256];
        Span<ulong> weights = stackalloc ulong[256];
        ulong prefix = 0, needed = target;
        Span<ulong> workKeys = s.WorkKeys.AsSpan(0, keys.Length), workMasses = s.WorkMasses.AsSpan(0, keys.Length);
        int n = keys.Length;
        for (int shift = 56; shift >= 0; shift -= 8)
        {
            counts.Clear();
            weights.Clear();
            for (int j = 0; j < n; j++)
            {
                int bin = (int)((keys[j] >> shift) & 255);
                counts[bin]++;
                weights[bin] += weighted ? masses[j] : 1ul;
            }
            ulong above = 0;
            int b = 255;
            while (b >= 0 && above + weights[b] < needed) above += weights[b--];
            if (b < 0) return floor;
            prefix |= (ulong)b << shift;
            needed -= above;
            if (counts[b] == 1 || (!weighted && weights[b] == needed)) break;
            int kept = 0;
            for (int j = 0; j < n; j++)
                if ((int)((keys[j] >> shift) & 255) == b)
                {
                    workKeys[kept] = keys[j];
                    if (weighted) workMasses[kept] = masses[j];
                    kept++;
                }
            keys = workKeys;
            masses = weighted ? workMasses : default;
            n = kept;
        }
        return prefix;
    }

    /// <summary>Per-thread arrays of a row's sampling, grown to the vocabulary once and kept (nothing allocated per step).</summary>
    sealed class Scratch
    {
        [ThreadStatic] static Scratch? t_scratch;

        public float[] Values = [];
        public int[] Ids = [];
        public ulong[] Keys = [], Masses = [], WorkKeys = [], WorkMasses = [];

        public static Scratch For(int vocab)
        {
            var s = t_scratch ??= new Scratch();
            if (s.Values.Length < vocab)
            {
                s.Values = new float[vocab];
                s.Ids = new int[vocab];
                s.Keys = new ulong[vocab];
                s.Masses = new ulong[vocab];
                s.WorkKeys = new ulong[vocab];
                s.WorkMasses = new ulong[vocab];
            }
            return s;
        }
    }

    /// <summary>A finite row's logprobs: the token's logprob and rank, and the top n (n ≥ 0).</summary>
    static void Logprobs(ReadOnlySpan<float> x, int n, Span<int> o, ref float logprob, Span<int> topIds, Span<float> topLogprobs)
    {
        float max = float.NegativeInfinity;
        foreach (float v in x) max = Math.Max(max, v);
        double sum = 0;
        foreach (float v in x) sum += MathF.Exp(v - max);
        float lse = max + MathF.Log((float)sum);
        float xt = x[o[OToken]];
        int higher = 0;
        foreach (float v in x) if (v > xt) higher++;
        o[ORank] = higher + 1;
        logprob = xt - lse;
        if (n == 0) return;
        var s = Scratch.For(x.Length);
        int finite = 0;
        for (int i = 0; i < x.Length; i++)
            if (x[i] >= -float.MaxValue) s.Keys[finite++] = SampleMath.Key(x[i], i);
        ulong kth = SelectKey(s.Keys.AsSpan(0, finite), default, 0, (ulong)n, s);
        Span<ulong> keys = stackalloc ulong[n];
        int found = 0;
        for (int i = 0; i < x.Length && found < n; i++)
            if (SampleMath.Key(x[i], i) >= kth) keys[found++] = SampleMath.Key(x[i], i);
        keys.Sort();
        for (int j = 0; j < n; j++)
        {
            int id = (int)~(uint)keys[n - 1 - j];
            topIds[j] = id;
            topLogprobs[j] = x[id] - lse;
        }
    }
}

/// <summary>The CPU device's sampling family: <see cref="HostSample"/> on the host's arrays instead of the kernels.</summary>
internal sealed class HostSampleOps(ComputeDevice device) : SampleOps(device)
{
    private protected override void RunCore(SampleBatch batch, DeviceTensor logits) => HostSample.Run(batch, logits);
}
