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
    public static void Run(SampleBatch batch, Span<float> logits)
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
        for (int r = 0; r < batch.Rows; r++)
        {
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
        float t = f[PTemperature], topP = f[PTopP], minP = f[PMinP];
        int topK = p[PTopK], token0;
        if (t > 0)
        {
            ulong floor = 0;
            float max = float.NegativeInfinity;
            if (topK > 0 || topP < 1 || minP > 0)
            {
                foreach (float v in x) if (v / t > max) max = v / t;
                if (topK > 0) floor = SelectKey(x, t, max, minP, 0, weighted: false, (ulong)topK);
                if (topP < 1)
                {
                    ulong total = 0;
                    for (int i = 0; i < x.Length; i++)
                        if (SampleMath.Candidate(x[i] / t, i, max, minP, floor)) total += SampleMath.Mass(SampleMath.Relative(x[i] / t, max));
                    floor = SelectKey(x, t, max, minP, floor, weighted: true, SampleMath.TopPTarget(topP, total));
                }
            }
            long seed = (uint)p[PSeedLo] | ((long)p[PSeedHi] << 32);
            float best = float.NegativeInfinity;
            int bestIndex = int.MaxValue;
            for (int q = 0; q < (x.Length + 3) / 4; q++)
            {
                var draws = Philox.Draws(seed, p[PSequence], p[PPosition], q);
                for (int lane = 0; lane < 4 && q * 4 + lane < x.Length; lane++)
                {
                    int i = q * 4 + lane;
                    float v = x[i] / t;
                    if (!SampleMath.Candidate(v, i, max, minP, floor)) continue;
                    float score = SampleMath.Score(v, Philox.ToUniform(Philox.Word(draws, lane)));
                    if (SampleMath.Better(score, i, best, bestIndex))
                    {
                        best = score;
                        bestIndex = i;
                    }
                }
            }
            token0 = bestIndex == int.MaxValue ? 0 : bestIndex;
        }
        else
        {
            token0 = Argmax(x);
        }
        for (int e = start; e < end; e++) x[editInts[e * EditInts]] = editFloats[e * EditFloats + 1];
        return token0;
    }

    /// <summary>SampleOps' radix select, one thread: the largest key K of a candidate with W(key ≥ K) ≥ target (else <paramref name="floor"/>).</summary>
    static ulong SelectKey(ReadOnlySpan<float> x, float t, float max, float minP, ulong floor, bool weighted, ulong target)
    {
        Span<uint> counts = stackalloc uint[256];
        Span<ulong> weights = stackalloc ulong[256];
        ulong prefix = 0, mask = 0, needed = target;
        for (int shift = 56; shift >= 0; shift -= 8)
        {
            counts.Clear();
            weights.Clear();
            for (int i = 0; i < x.Length; i++)
            {
                float v = x[i] / t;
                if (!SampleMath.Candidate(v, i, max, minP, floor)) continue;
                ulong key = SampleMath.Key(v, i);
                if ((key & mask) != prefix) continue;
                int bin = (int)((key >> shift) & 255);
                counts[bin]++;
                weights[bin] += weighted ? SampleMath.Mass(SampleMath.Relative(v, max)) : 1ul;
            }
            ulong above = 0;
            int b = 255;
            while (b >= 0 && above + weights[b] < needed) above += weights[b--];
            if (b < 0) return floor;
            prefix |= (ulong)b << shift;
            needed -= above;
            if (counts[b] == 1 || (!weighted && weights[b] == needed)) break;
            mask |= 255ul << shift;
        }
        return prefix;
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
        ulong kth = SelectKey(x, 1f, max, 0f, 0, weighted: false, (ulong)n);
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
    private protected override void RunCore(SampleBatch batch, DeviceTensor logits) => HostSample.Run(batch, logits.HostSpan<float>());
}
