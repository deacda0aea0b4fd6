using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace LoraEngine.Tensors.Kernels;

// Split-context attention (flash-decoding, vLLM's paged_attention v2): the context of each (token, KV head) is cut into
// splits whose boundaries depend only on that token's context length (SplitLength); a group of 4 warps computes one split
// for all the query heads sharing the KV head (each K and V row is read once for them), and a second kernel combines the
// splits of each (token, head) in split order. A decode token with a short context thus spreads over up to 16 × kvHeads
// groups instead of heads groups of one long serial walk, and no result depends on the batch, the grid or the GPU.
public partial class AttentionOps
{
    const int SplitThreads = 128;
    const int SplitWarps = SplitThreads / 32;

    /// <summary>Positions a split group scores at once (two threads a position); also the shortest split.</summary>
    internal const int SplitChunk = 64;

    /// <summary>Most splits of one context: longer contexts get longer splits (multiples of <see cref="SplitChunk"/>).</summary>
    internal const int MaxSplits = 16;

    /// <summary>Most query heads one split group serves; a KV head shared by more is served by several groups.</summary>
    const int MaxGroupHeads = 8;

    /// <summary>Floats of the default partial-result workspace: 481 tokens of Llama-3.2-1B a launch, 248 of Llama-3.1-8B (16 splits).</summary>
    internal const int DefaultWorkspaceFloats = 16 << 20;

    /// <summary>Positions per split for a context of <paramref name="ctx"/> positions: 64 up to 1024 positions, then the multiple of 64 that needs at most 16 splits.</summary>
    internal static int SplitLength(int ctx) => SplitChunk * XMath.Max(1, (int)(((long)ctx + SplitChunk * MaxSplits - 1) / (SplitChunk * MaxSplits)));

    /// <summary>Splits of a context of <paramref name="ctx"/> positions (1 for an empty context).</summary>
    internal static int SplitCount(int ctx)
    {
        int length = SplitLength(ctx);
        return XMath.Max(1, (int)(((long)ctx + length - 1) / length));
    }

    /// <summary>
    /// Whether the split kernels serve this head_dim: a score round reads at least 32 dims a position, and a warp's value
    /// columns (head_dim / 16 F4s) must divide its 32 lanes for the butterfly reduction (96, 160, … go to the other kernels).
    /// </summary>
    static bool SplitSupports(int headDim) => headDim is 32 or 64 or 128 or 256;

    /// <summary>Floats of one split's partial result of one head in the workspace: o[headDim], then max, sum (padded to 16 bytes).</summary>
    static int RecordFloats(int headDim) => headDim + 4;

    /// <summary>Where the partial result of (token tl of the launch, head h, split) starts in the workspace.</summary>
    static long Record(AttentionShape s, int tl, int h, int split) => (((long)tl * s.Heads + h) * s.GridSplits + split) * RecordFloats(s.HeadDim);

    /// <summary>
    /// Splits a launch provides per (token, head): the most any context up to the block table's reach can have (a shape,
    /// fixed for an engine and in a captured graph, so a replay with longer contexts still finds all its splits).
    /// </summary>
    internal static int GridSplitsFor(int maxContext) => maxContext >= SplitChunk * MaxSplits ? MaxSplits : XMath.Max(1, (maxContext + SplitChunk - 1) / SplitChunk);

    /// <summary>Positions token t attends to, clamped to the block table's reach (positions past it are never mapped).</summary>
    static int ContextOf(AttentionViews v, AttentionShape s, int t) => XMath.Min(v.TokenPos[t] + 1, s.MaxContext);

    // For split `split` of token t's context and query heads h0..h0+rc−1 (KV head kvh), over the split's positions p:
    // m[h] = max_p score, l[h] = Σ_p e^(score − m[h]), o[h] = Σ_p e^(score − m[h]) · V[p], score = scale · q[t,h] · K[p].
    // One split: out[t,h] = o[h] / l[h]; more: (o, m, l) go to the workspace for CombineSplitsKernel.
    // Grid: (token, KV head, head group, split < GridSplits), splits past the token's last exit at once. Positions come in chunks of 64,
    // each chunk's K and V rows loaded once into registers and used for all rc heads of the group:
    // - scores: two threads a position, each half the dims in rounds of 8 loads (64 dims a pair), then every head's dot;
    // - values: warps take a quarter of the dims each and lanes positions, 8 rows in flight a lane; the first round is
    //   issued before the softmax (it needs only the chunk's rows) so its latency hides behind it; each head's sum is
    //   reduced by butterfly;
    // - between them one warp per head does the chunk's softmax bookkeeping.
    // With GroupLanes every warp takes part in each round of the softmax bookkeeping (the exchanges are group-wide);
    // a warp past the last head computes nothing it keeps.
    static void SplitAttentionKernel<TLanes>(AttentionViews v, AttentionShape s) where TLanes : struct, ILanes
    {
        TLanes lanes = default;
        var qs = SharedMemory.Allocate<float>(MaxGroupHeads * MaxHeadDim);      // [rc, qDim] scaled queries, zero past headDim
        var acc = SharedMemory.Allocate<float>(MaxGroupHeads * MaxHeadDim);     // [rc, headDim] o relative to runMax
        var weights = SharedMemory.Allocate<float>(MaxGroupHeads * SplitChunk); // [rc, chunk] scores, then weights
        var rows = SharedMemory.Allocate<long>(SplitChunk);                     // the chunk's cache rows as F4 indices, −1 unmapped or past the end
        var runMax = SharedMemory.Allocate<float>(MaxGroupHeads);
        var runSum = SharedMemory.Allocate<float>(MaxGroupHeads);
        var rescale = SharedMemory.Allocate<float>(MaxGroupHeads);
        int tid = Group.IdxX, warp = lanes.WarpIdx, lane = lanes.Lane;
        int g = Grid.IdxX;
        int split = g % s.GridSplits;
        g /= s.GridSplits;
        int headGroup = g % s.HeadGroups;
        g /= s.HeadGroups;
        int kvh = g % s.KvHeads, tl = g / s.KvHeads, t = s.TokenOffset + tl;
        int seq = v.TokenSeq[t], ctx = ContextOf(v, s, t);
        int splits = SplitCount(ctx);
        if (split >= splits) return;
        int length = SplitLength(ctx), start = split * length, end = XMath.Min(start + length, ctx);
        int ratio = s.Heads / s.KvHeads, r0 = headGroup * MaxGroupHeads;
        int rc = XMath.Min(MaxGroupHeads, ratio - r0), h0 = kvh * ratio + r0;
        int hd = s.HeadDim, hd4 = hd / 4;
        int qDim = XMath.Max(hd, 64); // a score round covers 64 dims: at head_dim 32 zero queries make its upper half add nothing
        long qBase = ((long)t * s.Heads + h0) * hd;
        for (int i = tid; i < rc * qDim; i += SplitThreads)
        {
            int r = i / qDim, d = i % qDim;
            qs[i] = d < hd ? v.Q[qBase + r * hd + d] * s.Scale : 0f;
        }
        for (int i = tid; i < rc * hd; i += SplitThreads)
            acc[i] = 0;
        if (tid < rc)
        {
            runMax[tid] = float.NegativeInfinity;
            runSum[tid] = 0;
        }
        Group.Barrier();

        int pos = tid >> 1, half = tid & 1;                              // scores: two threads a position
        int cw = hd / 16, col = warp * cw + lane % cw, posLane = lane / cw; // values: warp's F4 columns, lanes' positions
        int stride = 32 / cw, roundRows = 8 * stride;                    // a value round: 8 rows a lane, roundRows a warp
        for (int c0 = start; c0 < end; c0 += SplitChunk)
        {
            int count = XMath.Min(SplitChunk, end - c0);
            long kv = pos < count ? KvOffset(v, s, seq, c0 + pos, kvh) : -1;
            long row = kv >= 0 ? kv / 4 : -1;
            if (half == 0) rows[pos] = row;
            for (int j0 = 0; j0 < hd4; j0 += 16)
            {
                // This thread's F4 columns j0 + half, +2, …, +14 of the key row, then each head's partial dot from them.
                var k = KeyRound(v.KCache4, row, j0 + half, hd4);
                int q = 4 * (j0 + half);
                for (int r = 0; r < rc; r++)
                {
                    float dot = RoundDot(qs, r * qDim + q, k);
                    dot += lanes.Xor(dot, 1);
                    int w = r * SplitChunk + pos;
                    if (half == 0) weights[w] = j0 == 0 ? dot : weights[w] + dot;
                }
            }
            Group.Barrier();

            var values = ValueRound(v.VCache4, rows, posLane, stride, count, col);
            int headsEnd = lanes.GroupWide ? (rc + SplitWarps - 1) / SplitWarps * SplitWarps : rc;
            for (int r = warp; r < headsEnd; r += SplitWarps)
            {
                // Unmapped positions and those past the chunk's end (rows −1) get weight 0.
                bool head = r < rc;
                int w0 = r * SplitChunk + lane, w1 = w0 + 32;
                float a = head && rows[lane] >= 0 ? weights[w0] : float.NegativeInfinity;
                float b = head && rows[lane + 32] >= 0 ? weights[w1] : float.NegativeInfinity;
                float old = head ? runMax[r] : 0f, max = XMath.Max(old, MatMulOps.WarpMax<TLanes>(XMath.Max(a, b)));
                float wa = a == float.NegativeInfinity ? 0f : XMath.Exp(a - max);
                float wb = b == float.NegativeInfinity ? 0f : XMath.Exp(b - max);
                float sum = MatMulOps.WarpSum<TLanes>(wa + wb);
                if (!head) continue;
                weights[w0] = wa;
                weights[w1] = wb;
                if (lane == 0)
                {
                    float c = old == float.NegativeInfinity ? 0f : XMath.Exp(old - max);
                    rescale[r] = c;
                    runSum[r] = runSum[r] * c + sum;
                    runMax[r] = max;
                }
            }
            Group.Barrier();

            // Rounds of roundRows positions (one at head_dim ≤ 64, up to four at 256), each head from the same registers.
            for (int i0 = 0; i0 < count; i0 += roundRows)
            {
                if (i0 > 0) values = ValueRound(v.VCache4, rows, i0 + posLane, stride, count, col);
                for (int r = 0; r < rc; r++)
                {
                    F4 o = Weighted(weights, r * SplitChunk, i0 + posLane, stride, count, values);
                    for (int offset = cw; offset < 32; offset <<= 1)
                    {
                        o.X += lanes.Xor(o.X, offset);
                        o.Y += lanes.Xor(o.Y, offset);
                        o.Z += lanes.Xor(o.Z, offset);
                        o.W += lanes.Xor(o.W, offset);
                    }
                    if (posLane == 0)
                    {
                        int at = r * hd + 4 * col;
                        float c = i0 == 0 ? rescale[r] : 1f; // the chunk's first round rescales to the new max
                        acc[at] = acc[at] * c + o.X;
                        acc[at + 1] = acc[at + 1] * c + o.Y;
                        acc[at + 2] = acc[at + 2] * c + o.Z;
                        acc[at + 3] = acc[at + 3] * c + o.W;
                    }
                }
            }
            Group.Barrier(); // the next chunk overwrites rows and weights; acc is read below
        }

        if (splits == 1)
        {
            for (int i = tid; i < rc * hd; i += SplitThreads)
            {
                float l = runSum[i / hd];
                v.Output[qBase + i] = acc[i] * (l > 0 ? 1f / l : 0f);
            }
            return;
        }
        for (int i = tid; i < rc * hd; i += SplitThreads)
            v.Partials[Record(s, tl, h0 + i / hd, split) + i % hd] = acc[i];
        if (tid < rc)
        {
            long record = Record(s, tl, h0 + tid, split);
            v.Partials[record + hd] = runMax[tid];
            v.Partials[record + hd + 1] = runSum[tid];
        }
    }

    // out[t,h] = Σ_s e^(m_s − M) · o_s / Σ_s e^(m_s − M) · l_s over token t's splits s in order, M = max_s m_s.
    // One group per (token, head); tokens of one split were written by SplitAttentionKernel and are skipped.
    static void CombineSplitsKernel(AttentionViews v, AttentionShape s)
    {
        var parts = SharedMemory.Allocate<float>(MaxSplits * MaxHeadDim);
        var maxes = SharedMemory.Allocate<float>(MaxSplits);
        var sums = SharedMemory.Allocate<float>(MaxSplits);
        var scales = SharedMemory.Allocate<float>(MaxSplits);
        int tid = Group.IdxX;
        int tl = Grid.IdxX / s.Heads, h = Grid.IdxX % s.Heads, t = s.TokenOffset + tl;
        int splits = SplitCount(ContextOf(v, s, t));
        if (splits == 1) return;
        int hd = s.HeadDim, hd4 = hd / 4, record4 = RecordFloats(hd) / 4;
        long first = Record(s, tl, h, 0);
        if (tid < splits)
        {
            maxes[tid] = v.Partials[first + (long)tid * RecordFloats(hd) + hd];
            sums[tid] = v.Partials[first + (long)tid * RecordFloats(hd) + hd + 1];
        }
        long first4 = first / 4;
        int n = splits * hd4;
        for (int i = tid; i < n; i += 2 * SplitThreads)
        {
            int i2 = i + SplitThreads;
            F4 a = v.Partials4[first4 + (i / hd4) * record4 + i % hd4];
            F4 b = i2 < n ? v.Partials4[first4 + (i2 / hd4) * record4 + i2 % hd4] : default;
            Store(parts, (i / hd4) * MaxHeadDim + 4 * (i % hd4), a);
            if (i2 < n) Store(parts, (i2 / hd4) * MaxHeadDim + 4 * (i2 % hd4), b);
        }
        Group.Barrier();
        if (tid < splits)
        {
            float max = float.NegativeInfinity;
            for (int j = 0; j < splits; j++) max = XMath.Max(max, maxes[j]);
            scales[tid] = maxes[tid] == float.NegativeInfinity ? 0f : XMath.Exp(maxes[tid] - max);
        }
        Group.Barrier();
        float total = 0;
        for (int j = 0; j < splits; j++) total += sums[j] * scales[j];
        float inv = total > 0 ? 1f / total : 0f;
        long outBase = ((long)t * s.Heads + h) * hd;
        for (int d = tid; d < hd; d += SplitThreads)
        {
            float o = 0;
            for (int j = 0; j < splits; j++) o += parts[j * MaxHeadDim + d] * scales[j];
            v.Output[outBase + d] = o * inv;
        }
    }

    /// <summary>Eight F4 loads a thread holds in registers: a score round's key columns or a value round's rows.</summary>
    struct F4x8
    {
        public F4 A, B, C, D, E, F, G, H;
    }

    /// <summary>F4 columns j, j+2, …, j+14 of key row <paramref name="row"/>: zero where unmapped (row −1), the upper four zero past the row (head_dim 32).</summary>
    static F4x8 KeyRound(ArrayView<F4> cache, long row, int j, int hd4)
    {
        if (row < 0) return default;
        var k = new F4x8 { A = cache[row + j], B = cache[row + j + 2], C = cache[row + j + 4], D = cache[row + j + 6] };
        if (j + 8 < hd4)
        {
            k.E = cache[row + j + 8];
            k.F = cache[row + j + 10];
            k.G = cache[row + j + 12];
            k.H = cache[row + j + 14];
        }
        return k;
    }

    /// <summary>q · k over a score round: query floats q, q+8, …, q+56 (in fours) against the round's columns.</summary>
    static float RoundDot(ArrayView<float> qs, int q, F4x8 k) =>
        Dot(qs, q, k.A) + Dot(qs, q + 8, k.B) + Dot(qs, q + 16, k.C) + Dot(qs, q + 24, k.D)
        + Dot(qs, q + 32, k.E) + Dot(qs, q + 40, k.F) + Dot(qs, q + 48, k.G) + Dot(qs, q + 56, k.H);

    static float Dot(ArrayView<float> q, int at, F4 k) => q[at] * k.X + q[at + 1] * k.Y + q[at + 2] * k.Z + q[at + 3] * k.W;

    /// <summary>Column <paramref name="col"/> (F4) of the value rows of chunk positions i, i+stride, …, i+7·stride.</summary>
    static F4x8 ValueRound(ArrayView<F4> cache, ArrayView<long> rows, int i, int stride, int count, int col) => new F4x8
    {
        A = ValueRow(cache, rows, i, count, col), B = ValueRow(cache, rows, i + stride, count, col),
        C = ValueRow(cache, rows, i + 2 * stride, count, col), D = ValueRow(cache, rows, i + 3 * stride, count, col),
        E = ValueRow(cache, rows, i + 4 * stride, count, col), F = ValueRow(cache, rows, i + 5 * stride, count, col),
        G = ValueRow(cache, rows, i + 6 * stride, count, col), H = ValueRow(cache, rows, i + 7 * stride, count, col),
    };

    /// <summary>Column <paramref name="col"/> (F4) of chunk position i's value row; zero past the chunk or unmapped.</summary>
    static F4 ValueRow(ArrayView<F4> cache, ArrayView<long> rows, int i, int count, int col)
    {
        if (i >= count) return default;
        long row = rows[i];
        return row >= 0 ? cache[row + col] : default;
    }

    /// <summary>Σ_m weight[i + m·stride] · values_m for one head's weights starting at <paramref name="at"/>.</summary>
    static F4 Weighted(ArrayView<float> weights, int at, int i, int stride, int count, F4x8 x)
    {
        F4 o = default;
        o = MulAdd(o, Weight(weights, at, i, count), x.A);
        o = MulAdd(o, Weight(weights, at, i + stride, count), x.B);
        o = MulAdd(o, Weight(weights, at, i + 2 * stride, count), x.C);
        o = MulAdd(o, Weight(weights, at, i + 3 * stride, count), x.D);
        o = MulAdd(o, Weight(weights, at, i + 4 * stride, count), x.E);
        o = MulAdd(o, Weight(weights, at, i + 5 * stride, count), x.F);
        o = MulAdd(o, Weight(weights, at, i + 6 * stride, count), x.G);
        return MulAdd(o, Weight(weights, at, i + 7 * stride, count), x.H);
    }

    static float Weight(ArrayView<float> weights, int at, int i, int count) => i < count ? weights[at + i] : 0f;

    static F4 MulAdd(F4 acc, float w, F4 x)
    {
        acc.X += w * x.X;
        acc.Y += w * x.Y;
        acc.Z += w * x.Z;
        acc.W += w * x.W;
        return acc;
    }

    static void Store(ArrayView<float> a, int at, F4 x)
    {
        a[at] = x.X;
        a[at + 1] = x.Y;
        a[at + 2] = x.Z;
        a[at + 3] = x.W;
    }
}
