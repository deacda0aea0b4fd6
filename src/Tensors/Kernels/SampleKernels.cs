using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;
using static LoraEngine.Tensors.Kernels.SampleBatch;

namespace LoraEngine.Tensors.Kernels;

/// <summary>
/// Sampling on the device: each row of logits [rows, vocab] becomes a token (and, when asked, logprobs) as its
/// <see cref="SampleRow"/> says, so only ids and the requested top-n come back to the host. Four launches (22 when a row filters), all reading
/// their parameters from a <see cref="SampleBatch"/> (so a CUDA graph can replay them):
/// <list type="number">
/// <item>prepare — one group per Sample row: apply the row's edits in place (raw values saved); then, when some row
///   filters, the select kernels (each row over <see cref="SampleBatch.Parts"/> groups, SampleSelectKernels.cs) find its
///   maximum and threshold key: the k-th largest for top-k, then the smallest prefix reaching top-p's mass (radix select
///   over the 64-bit (value, id) key, 8 passes each, integer histograms summed over the parts);</item>
/// <item>pick (parts × rows groups, so one row spreads over the device) and pick-final (a warp per row): the exponential
///   race argmax over the kept tokens, v − log(−log u) with u from Philox(seed, sequence, position, id), or the plain
///   argmax (Argmax rows, temperature 0); every value is also checked for NaN and ±∞; final restores the raw logits;</item>
/// <item>logprobs — one group per finite row that wants them: log-sum-exp, the token's logprob and rank, and the top n
///   by radix select.</item>
/// </list>
/// Every decision is a max, a count or an integer sum, so it does not depend on how the work is split: a row gives the
/// same token alone or in any batch, eager or replayed. The CPU device runs <see cref="HostSample"/>, the same steps
/// (<see cref="HostSampleOps"/>).
/// </summary>
public partial class SampleOps
{
    const int GroupSize = 256;

    readonly ComputeDevice _device;
    readonly Action<AcceleratorStream, KernelConfig, SampleViews> _prepare, _pick, _pickFinal, _logprobs, _max, _mass;
    readonly Action<AcceleratorStream, KernelConfig, SampleViews, int, int> _pass;

    internal SampleOps(ComputeDevice device)
    {
        _device = device;
        var acc = device.Accelerator;
        _prepare = device.Serialized(acc.LoadKernel<SampleViews>(PrepareKernel));
        _mass = device.Serialized(acc.LoadKernel<SampleViews>(MassKernel));
        _pass = device.Serialized(acc.LoadKernel<SampleViews, int, int>(SelectPassKernel));
        (_pick, _pickFinal, _max, _logprobs) = device.UsesGroupLanes ? LoadWithLanes<GroupLanes>(device) : LoadWithLanes<WarpLanes>(device);
    }

    /// <summary>The kernels that exchange values within warps or groups (pick, its final pass, max, logprobs), with the device's warps.</summary>
    static (Action<AcceleratorStream, KernelConfig, SampleViews>, Action<AcceleratorStream, KernelConfig, SampleViews>,
        Action<AcceleratorStream, KernelConfig, SampleViews>, Action<AcceleratorStream, KernelConfig, SampleViews>) LoadWithLanes<TLanes>(ComputeDevice device)
        where TLanes : struct, ILanes
    {
        var acc = device.Accelerator;
        return (
            device.Serialized(acc.LoadKernel<SampleViews>(PickKernel<TLanes>)), device.Serialized(acc.LoadKernel<SampleViews>(PickFinalKernel<TLanes>)),
            device.Serialized(acc.LoadKernel<SampleViews>(MaxKernel<TLanes>)), device.Serialized(acc.LoadKernel<SampleViews>(LogprobsKernel<TLanes>)));
    }

    /// <summary>The buffers of one run (a struct keeps the kernel signatures short).</summary>
    internal struct SampleViews
    {
        public ArrayView<float> Logits;                       // [rows, vocab]
        public ArrayView<int> RowInts, EditInts, Thresholds, PartialIndices, PartialNonFinite, Out, TopIds;
        public ArrayView<float> RowFloats, EditFloats, Maxima, PartialValues, OutLogprob, TopLogprobs;
        public ArrayView<ulong> SelectState, HistogramWeights;
        public ArrayView<uint> HistogramCounts;
        public ArrayView<int> Arrivals;
        public int Vocab, Parts;
    }

    /// <summary>
    /// Samples the rows last written to <paramref name="batch"/> from <paramref name="logits"/> [batch.Rows, vocab];
    /// the logits are edited and restored in place. Results are read with <see cref="SampleBatch.Read"/>.
    /// </summary>
    public void Run(SampleBatch batch, DeviceTensor logits)
    {
        ArgumentNullException.ThrowIfNull(batch);
        Check.DType(logits, DType.F32, nameof(logits));
        Check.Shape(logits, nameof(logits), batch.Rows, batch.Vocab);
        Check.SameDevice(logits, _device, nameof(logits));
        if (batch.Rows == 0) return;
        RunCore(batch, logits);
    }

    private protected virtual void RunCore(SampleBatch batch, DeviceTensor logits)
    {
        int rows = batch.Rows;
        var views = new SampleViews
        {
            Logits = logits.F32,
            RowInts = batch.RowInts.I32,
            RowFloats = batch.RowFloats.F32,
            EditInts = batch.EditIntsTensor.I32,
            EditFloats = batch.EditFloatsTensor.F32,
            Thresholds = batch.Thresholds.I32,
            Maxima = batch.Maxima.F32,
            PartialValues = batch.PartialValues.F32,
            PartialIndices = batch.PartialIndices.I32,
            PartialNonFinite = batch.PartialNonFinite.I32,
            Out = batch.Out.I32,
            OutLogprob = batch.OutLogprob.F32,
            TopIds = batch.TopIds.I32,
            TopLogprobs = batch.TopLogprobs.F32,
            SelectState = batch.SelectState.I32.Cast<ulong>(),
            HistogramCounts = batch.HistogramCounts.I32.Cast<uint>(),
            HistogramWeights = batch.HistogramWeights.I32.Cast<ulong>(),
            Arrivals = batch.Arrivals.I32,
            Vocab = batch.Vocab,
            Parts = batch.Parts,
        };
        var stream = _device.Stream;
        _prepare(stream, new KernelConfig(rows, GroupSize), views);
        if (batch.AnyFiltered) Select(stream, views, rows, batch.Parts);
        _pick(stream, new KernelConfig(new Index2D(batch.Parts, rows), new Index2D(GroupSize, 1)), views);
        _pickFinal(stream, new KernelConfig(rows, 32), views);
        _logprobs(stream, new KernelConfig(rows, GroupSize), views);
    }

    // Sample rows: logits[r, e.token] = edit(raw) for the row's edits (raw saved in EditFloats[e, 1]). A row that filters
    // (temperature > 0 with top-k, top-p or min-p) gets its maximum and threshold from the select kernels that follow
    // (SampleSelectKernels.cs); any other row keeps every candidate: Thresholds[r] = 0, Maxima[r] = −∞.
    static void PrepareKernel(SampleViews s)
    {
        int r = Grid.IdxX, p = r * IntParams, f = r * FloatParams;
        if (Group.IdxX == 0) s.SelectState[r * SelectStateLongs + 2] = 0; // no select phase until the max kernel sets one
        if (s.RowInts[p + PMode] != (int)SampleMode.Sample) return;
        long row = (long)r * s.Vocab;
        int start = s.RowInts[p + PEditStart], end = start + s.RowInts[p + PEditCount];
        float repetition = s.RowFloats[f + PRepetition], presence = s.RowFloats[f + PPresence], frequency = s.RowFloats[f + PFrequency];
        for (int e = start + Group.IdxX; e < end; e += Group.DimX)
        {
            int token = s.EditInts[e * EditInts];
            float raw = s.Logits[row + token];
            s.EditFloats[e * EditFloats + 1] = raw;
            s.Logits[row + token] = SampleMath.Edit(raw, s.EditFloats[e * EditFloats], s.EditInts[e * EditInts + 2] != 0, s.EditInts[e * EditInts + 1],
                repetition, presence, frequency);
        }
        if (Group.IdxX != 0 || Filters(s, r)) return;
        s.Thresholds[r * 2] = 0;
        s.Thresholds[r * 2 + 1] = 0;
        s.Maxima[r] = float.NegativeInfinity;
    }

    /// <summary>
    /// Radix select over the candidates' keys (SampleMath.Candidate with <paramref name="floor"/>), by the whole
    /// group: the largest key K with W(key ≥ K) ≥ <paramref name="target"/>, W = count (unweighted) or Σ mass; every
    /// candidate's key (<paramref name="floor"/>) when all of them weigh less. One pass per byte of the key, most
    /// significant first, stopping once the chosen bin holds one token (or, counting, exactly what is still needed).
    /// </summary>
    static ulong SelectKey(ArrayView<float> x, long row, int vocab, float t, float max, float minP, ulong floor, bool weighted, ulong target,
        ArrayView<uint> counts, ArrayView<ulong> weights, ArrayView<ulong> state)
    {
        // state: [0] the key prefix chosen so far, [1] the weight still needed within it, [2] 1 once decided.
        if (Group.IdxX == 0)
        {
            state[0] = 0;
            state[1] = target;
            state[2] = 0;
        }
        ulong mask = 0;
        for (int shift = 56; shift >= 0; shift -= 8)
        {
            for (int b = Group.IdxX; b < 256; b += Group.DimX)
            {
                counts[b] = 0;
                weights[b] = 0;
            }
            Group.Barrier();
            if (state[2] != 0) break;
            ulong prefix = state[0];
            AddToHistogram(x, row, 0, vocab, t, max, minP, floor, weighted, mask, prefix, shift, counts, weights);
            Group.Barrier();
            if (Group.IdxX == 0)
            {
                ulong needed = state[1];
                int bin = PickBin(weights, needed, out ulong above);
                if (bin < 0)
                {
                    state[0] = floor; // fewer than the target: keep them all
                    state[2] = 1;
                }
                else
                {
                    state[0] = prefix | ((ulong)bin << shift);
                    state[1] = needed - above;
                    if (Settles(counts, weights, bin, needed - above, weighted)) state[2] = 1;
                }
            }
            mask |= 255ul << shift;
            Group.Barrier();
        }
        // An early stop leaves a bare prefix (the lower bytes zero), which may lie below the floor a top-k pass set: the
        // keys between them were not counted and must not come back.
        ulong result = XMath.Max(state[0], floor);
        Group.Barrier(); // everyone has read it before the shared state is used again
        return result;
    }

    /// <summary>
    /// A radix pass's choice from its byte histogram: the highest bin at which the bins from 255 down reach
    /// <paramref name="needed"/> (−1 when all of them together fall short), and the weight of the bins above it.
    /// </summary>
    static int PickBin(ArrayView<ulong> weights, ulong needed, out ulong above)
    {
        above = 0;
        int bin = 255;
        while (bin >= 0 && above + weights[bin] < needed) above += weights[bin--];
        return bin;
    }

    /// <summary>Whether the chosen bin ends the select early: it holds one token, or (counting) exactly the weight still needed.</summary>
    static bool Settles(ArrayView<uint> counts, ArrayView<ulong> weights, int bin, ulong remaining, bool weighted) =>
        counts[bin] == 1 || (!weighted && weights[bin] == remaining);

    /// <summary>
    /// Adds the candidates among tokens [lo, hi) of a row whose key matches <paramref name="prefix"/> under
    /// <paramref name="mask"/> to the byte-<paramref name="shift"/> histogram (count, and weight: mass or 1), by the whole
    /// group. Each thread adds up a run of its tokens falling into the same bin and adds the run at once: in the first
    /// passes nearly every logit shares one or two bins, where one shared atomic per token queued all 256 threads on the
    /// same address. The sums are integers, so the order they arrive in changes nothing.
    /// </summary>
    static void AddToHistogram(ArrayView<float> x, long row, int lo, int hi, float t, float max, float minP, ulong floor, bool weighted,
        ulong mask, ulong prefix, int shift, ArrayView<uint> counts, ArrayView<ulong> weights)
    {
        int runBin = -1;
        uint runCount = 0;
        ulong runWeight = 0;
        for (int i = lo + Group.IdxX; i < hi; i += Group.DimX)
        {
            float v = x[row + i] / t;
            if (!SampleMath.Candidate(v, i, max, minP, floor)) continue;
            ulong key = SampleMath.Key(v, i);
            if ((key & mask) != prefix) continue;
            int bin = (int)((key >> shift) & 255);
            if (bin != runBin)
            {
                if (runBin >= 0)
                {
                    Atomic.Add(ref counts[runBin], runCount);
                    Atomic.Add(ref weights[runBin], runWeight);
                }
                runBin = bin;
                runCount = 0;
                runWeight = 0;
            }
            runCount++;
            runWeight += weighted ? SampleMath.Mass(SampleMath.Relative(v, max)) : 1ul;
        }
        if (runBin >= 0)
        {
            Atomic.Add(ref counts[runBin], runCount);
            Atomic.Add(ref weights[runBin], runWeight);
        }
    }

    // Partial pick: group (part, r) scans its quarter-aligned slice of row r for the best candidate by
    // score = v − log(−log u_i) (Sample rows at T > 0; u_i from Philox, one block per 4 ids) or the value itself
    // (Argmax and Score rows, T = 0), ties to the lowest id, and counts the slice's NaN and ±∞.
    static void PickKernel<TLanes>(SampleViews s) where TLanes : struct, ILanes
    {
        TLanes lanes = default;
        var warpValues = SharedMemory.Allocate<float>(32);
        var warpIndices = SharedMemory.Allocate<int>(32);
        int r = Grid.IdxY, part = Grid.IdxX, p = r * IntParams, f = r * FloatParams;
        long row = (long)r * s.Vocab;
        float t = s.RowInts[p + PMode] == (int)SampleMode.Sample ? s.RowFloats[f + PTemperature] : 0f;
        float minP = s.RowFloats[f + PMinP], max = s.Maxima[r];
        ulong floor = (uint)s.Thresholds[r * 2] | ((ulong)(uint)s.Thresholds[r * 2 + 1] << 32);
        long seed = (uint)s.RowInts[p + PSeedLo] | ((long)s.RowInts[p + PSeedHi] << 32);
        int sequence = s.RowInts[p + PSequence], position = s.RowInts[p + PPosition];
        int quads = (s.Vocab + 3) / 4, perPart = (quads + s.Parts - 1) / s.Parts, q0 = part * perPart, q1 = XMath.Min(quads, q0 + perPart);
        float best = float.NegativeInfinity;
        int bestIndex = int.MaxValue, nonFinite = 0;
        for (int q = q0 + Group.IdxX; q < q1; q += Group.DimX)
        {
            var draws = t > 0 ? Philox.Draws(seed, sequence, position, q) : default;
            for (int lane = 0; lane < 4; lane++)
            {
                int i = q * 4 + lane;
                if (i >= s.Vocab) break;
                float score = s.Logits[row + i];
                if (!SampleMath.IsFinite(score)) nonFinite++;
                if (t > 0)
                {
                    float v = score / t;
                    if (!SampleMath.Candidate(v, i, max, minP, floor)) continue;
                    score = SampleMath.Score(v, Philox.ToUniform(Philox.Word(draws, lane)));
                }
                if (SampleMath.Better(score, i, best, bestIndex))
                {
                    best = score;
                    bestIndex = i;
                }
            }
        }
        nonFinite = lanes.GroupSum(nonFinite);
        SampleMath.WarpBest<TLanes>(ref best, ref bestIndex);
        if (lanes.Lane == 0)
        {
            warpValues[lanes.WarpIdx] = best;
            warpIndices[lanes.WarpIdx] = bestIndex;
        }
        Group.Barrier();
        if (Group.IdxX != 0) return;
        for (int w = 1; w < Group.DimX / 32; w++)
            if (SampleMath.Better(warpValues[w], warpIndices[w], best, bestIndex))
            {
                best = warpValues[w];
                bestIndex = warpIndices[w];
            }
        long at = (long)r * s.Parts + part;
        s.PartialValues[at] = best;
        s.PartialIndices[at] = bestIndex;
        s.PartialNonFinite[at] = nonFinite;
    }

    // One warp per row: the token is the best of the parts (none: 0), a Score row's its target; a Sample row's edited
    // logits are restored. Finite: no NaN or ±∞ among the raw logits — the parts saw the edited values, so the edits'
    // own count is taken back (a ban is a legitimate −∞) and their raw values checked instead.
    static void PickFinalKernel<TLanes>(SampleViews s) where TLanes : struct, ILanes
    {
        int lane = default(TLanes).Lane;
        int r = Grid.IdxX, p = r * IntParams, o = r * OutInts;
        float best = float.NegativeInfinity;
        int bestIndex = int.MaxValue, nonFinite = 0;
        for (int part = lane; part < s.Parts; part += 32)
        {
            long at = (long)r * s.Parts + part;
            nonFinite += s.PartialNonFinite[at];
            if (SampleMath.Better(s.PartialValues[at], s.PartialIndices[at], best, bestIndex))
            {
                best = s.PartialValues[at];
                bestIndex = s.PartialIndices[at];
            }
        }
        SampleMath.WarpBest<TLanes>(ref best, ref bestIndex);
        int mode = s.RowInts[p + PMode];
        if (mode == (int)SampleMode.Sample)
        {
            long row = (long)r * s.Vocab;
            int f = r * FloatParams, start = s.RowInts[p + PEditStart], end = start + s.RowInts[p + PEditCount];
            float repetition = s.RowFloats[f + PRepetition], presence = s.RowFloats[f + PPresence], frequency = s.RowFloats[f + PFrequency];
            for (int e = start + lane; e < end; e += 32)
            {
                // The edited value is recomputed, not read back from the logits: ILGPU's PTX backend moved a read of
                // logits[at] placed before the store below to after it (seen in its PTX), so the read saw the raw value.
                float raw = s.EditFloats[e * EditFloats + 1];
                float edited = SampleMath.Edit(raw, s.EditFloats[e * EditFloats], s.EditInts[e * EditInts + 2] != 0, s.EditInts[e * EditInts + 1],
                    repetition, presence, frequency);
                nonFinite += (SampleMath.IsFinite(raw) ? 0 : 1) - (SampleMath.IsFinite(edited) ? 0 : 1);
                s.Logits[row + s.EditInts[e * EditInts]] = raw;
            }
        }
        nonFinite = WarpSum<TLanes>(nonFinite);
        if (lane != 0) return;
        s.Out[o + OToken] = mode == (int)SampleMode.Score ? s.RowInts[p + PTarget] : bestIndex == int.MaxValue ? 0 : bestIndex;
        s.Out[o + OFinite] = nonFinite == 0 ? 1 : 0;
        s.Out[o + ORank] = 1;
    }

    // Finite rows with logprobs ≥ 0, on the raw logits x = logits[r, :]: lse = log Σ exp(x) (summed in double), the
    // token's logprob x[t] − lse and rank 1 + #{i : x[i] > x[t]}, and the top n by (x desc, id asc), found by radix
    // select and ordered by counting.
    static void LogprobsKernel<TLanes>(SampleViews s) where TLanes : struct, ILanes
    {
        TLanes lanes = default;
        var counts = SharedMemory.Allocate<uint>(256);
        var weights = SharedMemory.Allocate<ulong>(256);
        var state = SharedMemory.Allocate<ulong>(4);
        var slots = SharedMemory.Allocate<int>(MaxLogprobs);
        var slotCount = SharedMemory.Allocate<int>(1);
        int r = Grid.IdxX, p = r * IntParams, o = r * OutInts;
        int n = s.RowInts[p + PLogprobs];
        if (n < 0 || s.Out[o + OFinite] == 0) return;
        long row = (long)r * s.Vocab;
        float local = float.NegativeInfinity;
        for (int i = Group.IdxX; i < s.Vocab; i += Group.DimX) local = XMath.Max(local, s.Logits[row + i]);
        float max = lanes.GroupMax(local);
        double sum = 0; // in double, as the host's log-softmax: a vocabulary of 10⁵ terms loses digits in float
        for (int i = Group.IdxX; i < s.Vocab; i += Group.DimX) sum += XMath.Exp(s.Logits[row + i] - max);
        float lse = max + XMath.Log((float)lanes.GroupSum(sum));
        int token = s.Out[o + OToken];
        float xt = s.Logits[row + token];
        int higher = 0;
        for (int i = Group.IdxX; i < s.Vocab; i += Group.DimX)
            if (s.Logits[row + i] > xt) higher++;
        higher = lanes.GroupSum(higher);
        if (Group.IdxX == 0)
        {
            s.Out[o + ORank] = higher + 1;
            s.OutLogprob[r] = xt - lse;
        }
        if (n == 0) return;

        ulong kth = SelectKey(s.Logits, row, s.Vocab, 1f, max, 0f, 0, weighted: false, (ulong)n, counts, weights, state);
        if (Group.IdxX == 0) slotCount[0] = 0;
        Group.Barrier();
        for (int i = Group.IdxX; i < s.Vocab; i += Group.DimX)
            if (SampleMath.Key(s.Logits[row + i], i) >= kth)
            {
                int slot = Atomic.Add(ref slotCount[0], 1);
                if (slot < MaxLogprobs) slots[slot] = i;
            }
        Group.Barrier();
        for (int j = Group.IdxX; j < n; j += Group.DimX)
        {
            int id = slots[j];
            ulong key = SampleMath.Key(s.Logits[row + id], id);
            int place = 0;
            for (int m = 0; m < n; m++)
                if (SampleMath.Key(s.Logits[row + slots[m]], slots[m]) > key) place++;
            s.TopIds[r * MaxLogprobs + place] = id;
            s.TopLogprobs[r * MaxLogprobs + place] = s.Logits[row + id] - lse;
        }
    }

    static int WarpSum<TLanes>(int v) where TLanes : struct, ILanes
    {
        for (int offset = 16; offset > 0; offset >>= 1) v += default(TLanes).Xor(v, offset);
        return v;
    }
}
