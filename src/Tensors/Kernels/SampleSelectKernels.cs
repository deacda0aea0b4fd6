using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;
using static LoraEngine.Tensors.Kernels.SampleBatch;

namespace LoraEngine.Tensors.Kernels;

// The threshold of the rows that filter (top-k, top-p, min-p), each row spread over Parts groups (one group per row
// walked the whole vocabulary ~17 times on one SM: ~1.9 ms a step at 128 K tokens). Every kernel has a grid of
// (parts, rows); each group covers a slice of its row, adds its share to the row's totals, and the last group of the row
// to arrive (an arrival count, reset by it) makes the row's decision for the next launch. The decisions are the ones
// SelectKey makes in one group — a max and integer sums, so they do not depend on the split.
public partial class SampleOps
{
    /// <summary>The select launches of a run with filtering rows: the maximum, 8 top-k passes, the mass, 8 top-p passes.</summary>
    void Select(AcceleratorStream stream, SampleViews views, int rows, int parts)
    {
        var config = new KernelConfig(new Index2D(parts, rows), new Index2D(GroupSize, 1));
        _max(stream, config, views);
        for (int shift = 56; shift >= 0; shift -= 8) _pass(stream, config, views, 1, shift);
        _mass(stream, config, views);
        for (int shift = 56; shift >= 0; shift -= 8) _pass(stream, config, views, 2, shift);
    }

    /// <summary>Whether row r filters its candidates: Sample at temperature &gt; 0 with top-k, top-p or min-p.</summary>
    static bool Filters(SampleViews s, int r)
    {
        int p = r * IntParams, f = r * FloatParams;
        return s.RowInts[p + PMode] == (int)SampleMode.Sample && s.RowFloats[f + PTemperature] > 0
            && (s.RowInts[p + PTopK] > 0 || s.RowFloats[f + PTopP] < 1 || s.RowFloats[f + PMinP] > 0);
    }

    /// <summary>The slice [lo, hi) of the vocabulary part <paramref name="part"/> covers.</summary>
    static void PartRange(SampleViews s, int part, out int lo, out int hi)
    {
        int per = (s.Vocab + s.Parts - 1) / s.Parts;
        lo = XMath.Min(s.Vocab, part * per);
        hi = XMath.Min(s.Vocab, lo + per);
    }

    /// <summary>
    /// Counts this group in for row r (its writes visible first); true for the row's last group, which sets the count
    /// back to 0 and then sees every other group's writes.
    /// </summary>
    static bool LastOfRow(SampleViews s, int r, ArrayView<int> arrived)
    {
        MemoryFence.DeviceLevel();
        Group.Barrier();
        if (Group.IdxX == 0)
        {
            arrived[0] = Atomic.Add(ref s.Arrivals[r], 1);
            MemoryFence.DeviceLevel();
        }
        Group.Barrier();
        if (arrived[0] != s.Parts - 1) return false;
        if (Group.IdxX == 0) s.Arrivals[r] = 0;
        return true;
    }

    // Maxima[r] = max_i logits[r, i] / T (each part its slice, the last the parts'); then the row's first select phase:
    // top-k (phase 1) when it has one, else none yet (Thresholds[r] = 0: every candidate above min-p).
    static void MaxKernel<TLanes>(SampleViews s) where TLanes : struct, ILanes
    {
        var arrived = SharedMemory.Allocate<int>(1);
        int r = Grid.IdxY, part = Grid.IdxX;
        if (!Filters(s, r)) return;
        float t = s.RowFloats[r * FloatParams + PTemperature];
        PartRange(s, part, out int lo, out int hi);
        long row = (long)r * s.Vocab;
        float local = float.NegativeInfinity;
        for (int i = lo + Group.IdxX; i < hi; i += Group.DimX)
        {
            float v = s.Logits[row + i] / t;
            if (v > local) local = v; // NaN never
        }
        float max = default(TLanes).GroupMax(local);
        if (Group.IdxX == 0) s.PartialValues[(long)r * s.Parts + part] = max;
        if (!LastOfRow(s, r, arrived) || Group.IdxX != 0) return;
        float rowMax = float.NegativeInfinity;
        for (int q = 0; q < s.Parts; q++) rowMax = XMath.Max(rowMax, s.PartialValues[(long)r * s.Parts + q]);
        s.Maxima[r] = rowMax;
        s.Thresholds[r * 2] = 0;
        s.Thresholds[r * 2 + 1] = 0;
        int topK = s.RowInts[r * IntParams + PTopK], at = r * SelectStateLongs;
        s.SelectState[at] = 0;
        s.SelectState[at + 1] = (ulong)topK;
        s.SelectState[at + 2] = topK > 0 ? 1ul : 0ul;
        s.SelectState[at + 3] = 0;
    }

    // Top-p's target: the mass of the candidates at or above the top-k threshold (fixed point, exact), then phase 2.
    static void MassKernel(SampleViews s)
    {
        var sum = SharedMemory.Allocate<ulong>(1);
        var arrived = SharedMemory.Allocate<int>(1);
        int r = Grid.IdxY, part = Grid.IdxX, f = r * FloatParams;
        if (!Filters(s, r)) return;
        float t = s.RowFloats[f + PTemperature], topP = s.RowFloats[f + PTopP], minP = s.RowFloats[f + PMinP], max = s.Maxima[r];
        if (!(topP < 1)) return;
        ulong floor = Threshold(s, r);
        if (Group.IdxX == 0) sum[0] = 0;
        Group.Barrier();
        PartRange(s, part, out int lo, out int hi);
        long row = (long)r * s.Vocab;
        ulong mass = 0;
        for (int i = lo + Group.IdxX; i < hi; i += Group.DimX)
        {
            float v = s.Logits[row + i] / t;
            if (SampleMath.Candidate(v, i, max, minP, floor)) mass += SampleMath.Mass(SampleMath.Relative(v, max));
        }
        Atomic.Add(ref sum[0], mass);
        Group.Barrier();
        int at = r * SelectStateLongs;
        if (Group.IdxX == 0) Atomic.Add(ref s.SelectState[at + 3], sum[0]);
        if (!LastOfRow(s, r, arrived) || Group.IdxX != 0) return;
        s.SelectState[at] = 0;
        s.SelectState[at + 1] = SampleMath.TopPTarget(topP, s.SelectState[at + 3]);
        s.SelectState[at + 2] = 2;
        s.SelectState[at + 3] = 0;
    }

    /// <summary>The row's threshold key so far (Thresholds[r] as lo, hi).</summary>
    static ulong Threshold(SampleViews s, int r) => (uint)s.Thresholds[r * 2] | ((ulong)(uint)s.Thresholds[r * 2 + 1] << 32);

    // One radix pass of the row's select phase (1: top-k by count, 2: top-p by mass) on bits shift..shift+7 of the
    // candidates' keys that match the prefix chosen so far: each part histograms its slice in shared memory and adds it
    // to the row's histogram; the last part picks the bin as SelectKey does, clears the histogram, and ends the phase
    // (Thresholds[r] = the key) once the bin holds one token, the count is met exactly, fewer than the target exist, or
    // the last byte is chosen.
    static void SelectPassKernel(SampleViews s, int phase, int shift)
    {
        var counts = SharedMemory.Allocate<uint>(256);
        var weights = SharedMemory.Allocate<ulong>(256);
        var arrived = SharedMemory.Allocate<int>(1);
        int r = Grid.IdxY, part = Grid.IdxX, f = r * FloatParams, at = r * SelectStateLongs;
        if (s.SelectState[at + 2] != (ulong)phase) return;
        bool weighted = phase == 2;
        float t = s.RowFloats[f + PTemperature], minP = s.RowFloats[f + PMinP], max = s.Maxima[r];
        ulong floor = Threshold(s, r), prefix = s.SelectState[at], mask = shift == 56 ? 0ul : ~0ul << (shift + 8);
        for (int b = Group.IdxX; b < 256; b += Group.DimX)
        {
            counts[b] = 0;
            weights[b] = 0;
        }
        Group.Barrier();
        PartRange(s, part, out int lo, out int hi);
        long row = (long)r * s.Vocab;
        AddToHistogram(s.Logits, row, lo, hi, t, max, minP, floor, weighted, mask, prefix, shift, counts, weights);
        Group.Barrier();
        var rowCounts = s.HistogramCounts.SubView((long)r * 256, 256);
        var rowWeights = s.HistogramWeights.SubView((long)r * 256, 256);
        for (int b = Group.IdxX; b < 256; b += Group.DimX)
        {
            if (counts[b] == 0) continue;
            Atomic.Add(ref rowCounts[b], counts[b]);
            Atomic.Add(ref rowWeights[b], weights[b]);
        }
        if (!LastOfRow(s, r, arrived)) return;
        if (Group.IdxX == 0)
        {
            ulong needed = s.SelectState[at + 1];
            int bin = PickBin(rowWeights, needed, out ulong above);
            bool done = true;
            ulong key = floor; // fewer than the target: keep them all
            if (bin >= 0)
            {
                key = prefix | ((ulong)bin << shift);
                s.SelectState[at + 1] = needed - above;
                done = shift == 0 || Settles(rowCounts, rowWeights, bin, needed - above, weighted);
            }
            s.SelectState[at] = key;
            if (done)
            {
                key = XMath.Max(key, floor); // an early stop's bare prefix may lie below top-k's threshold (see SampleOps.SelectKey)
                s.SelectState[at + 2] = 0;
                s.Thresholds[r * 2] = (int)(uint)key;
                s.Thresholds[r * 2 + 1] = (int)(uint)(key >> 32);
            }
        }
        Group.Barrier(); // the decision has read the histogram
        for (int b = Group.IdxX; b < 256; b += Group.DimX)
        {
            rowCounts[b] = 0;
            rowWeights[b] = 0;
        }
    }
}
