using ILGPU;
using ILGPU.Runtime;

namespace LoraEngine.Tensors.Kernels;

// RoPE on q and k and the KV-cache write of k and v in one launch: the two ops a layer runs between its q/k/v projection
// and its attention, with their arithmetic and order unchanged (a decode step launches once per layer instead of twice).
public partial class AttentionOps
{
    readonly Action<AcceleratorStream, Index1D, RotateKvViews, RopeOps.RopeShape, int> _rotateWriteKv;
    readonly Action<AcceleratorStream, Index1D, RotateKvViews, RopeOps.RopeShape, int, QkvExpands> _rotateWriteKvExpand;

    /// <summary>The pending LoRA expands of q, k and v and the token slots they share.</summary>
    internal struct QkvExpands
    {
        public ExpandSegment<U4, F4> Q, K, V;
        public ArrayView<int> Slots;
    }

    /// <summary>The buffers of one rotate-and-write launch.</summary>
    internal struct RotateKvViews
    {
        public ArrayView<float> Q, K, V, KCache, VCache, CosSin;
        public ArrayView<int> Positions, Slots;
    }

    // Per token: the q pairs (rotated in place), the k pairs (rotated in place, then written to the cache), the v pairs
    // (copied to the cache). A pair is (j, j + half) of one head, as RopeCachedKernel rotates it; positions outside the
    // table leave q and k unrotated, slots −1 (or outside the cache) skip the write, as ApplyCached then WriteKv do.
    static void RotateWriteKvKernel(Index1D i, RotateKvViews v, RopeOps.RopeShape s, int numSlots) =>
        RotateWriteKvPair<NoExpand>(i, v, s, numSlots, default);

    // The same with q's, k's and v's pending LoRA expands added as each pair is read (LoraOps.ExpandAt on each first);
    // q and k, rotated or not, are written back with their deltas, v too, as the separate expand leaves them.
    static void RotateWriteKvExpandKernel(Index1D i, RotateKvViews v, RopeOps.RopeShape s, int numSlots, QkvExpands e) =>
        RotateWriteKvPair<WithExpand>(i, v, s, numSlots, e);

    static void RotateWriteKvPair<TMode>(int i, RotateKvViews v, RopeOps.RopeShape s, int numSlots, QkvExpands e) where TMode : struct, IExpandMode
    {
        bool expands = default(TMode).On;
        int half = s.HeadDim / 2;
        int qPairs = s.QWidth / 2, kvPairs = s.KWidth / 2, perToken = qPairs + 2 * kvPairs;
        int t = i / perToken, r = i % perToken;
        int loraSlot = expands ? LoraOps.ExpandSlot(e.Slots, e.Q, t) : -1;
        if (r >= qPairs + kvPairs)
        {
            int vSlot = v.Slots[t];
            bool writes = vSlot >= 0 && vSlot < numSlots;
            if (!writes && loraSlot < 0) return; // nothing to write: no v read (the kernel without LoRA's order)
            r -= qPairs + kvPairs;
            int d = r / half * s.HeadDim + r % half;
            long from = (long)t * s.KWidth + d;
            float v1 = v.V[from], v2 = v.V[from + half];
            if (loraSlot >= 0)
            {
                v1 += LoraOps.ExpandSum(e.V, loraSlot, t, d);
                v2 += LoraOps.ExpandSum(e.V, loraSlot, t, d + half);
                v.V[from] = v1;
                v.V[from + half] = v2;
            }
            if (!writes) return;
            long to = (long)vSlot * s.KWidth + d;
            v.VCache[to] = v1;
            v.VCache[to + half] = v2;
            return;
        }
        var x = v.Q;
        var xe = e.Q;
        int width = s.QWidth;
        bool isK = r >= qPairs;
        if (isK)
        {
            x = v.K;
            xe = e.K;
            width = s.KWidth;
            r -= qPairs;
        }
        int head = r / half, j = r % half;
        long a = (long)t * width + head * s.HeadDim + j, b = a + half;
        int pos = v.Positions[t];
        bool rotates = pos >= 0 && pos < s.MaxPositions;
        long cs = ((long)pos * half + j) * 2;
        float x1, x2;
        if (loraSlot >= 0)
        {
            x1 = x[a] + LoraOps.ExpandSum(xe, loraSlot, t, head * s.HeadDim + j);
            x2 = x[b] + LoraOps.ExpandSum(xe, loraSlot, t, head * s.HeadDim + j + half);
            if (rotates) (x1, x2) = RopeOps.Rotate(x1, x2, v.CosSin, cs);
            x[a] = x1;
            x[b] = x2;
        }
        else if (rotates) (x1, x2) = RopeOps.Rotate(x, a, b, v.CosSin, cs);
        else (x1, x2) = (x[a], x[b]);
        if (!isK) return;
        int slot = v.Slots[t];
        if (slot < 0 || slot >= numSlots) return;
        long at = (long)slot * s.KWidth + head * s.HeadDim + j;
        v.KCache[at] = x1;
        v.KCache[at + half] = x2;
    }

    /// <summary>
    /// <see cref="RopeOps.ApplyCached"/> on q and k, then <see cref="WriteKv"/> of the rotated k and of v, in one launch
    /// (the same results bit for bit). q, k and v must not overlap (checked): v is copied while k is rotated.
    /// </summary>
    /// <param name="q">[tokens, heads*headDim] F32, rotated in place</param>
    /// <param name="k">[tokens, kvHeads*headDim] F32, rotated in place</param>
    /// <param name="v">[tokens, kvHeads*headDim] F32</param>
    /// <param name="positions">[tokens] I32, each below the table's maxPositions</param>
    /// <param name="cosSin">[maxPositions, headDim/2, 2] F32 (<see cref="RopeOps.CosSinTable"/>)</param>
    /// <param name="headDim">width of one head, positive and even</param>
    /// <param name="kCache">[numBlocks, blockSize, kvHeads, headDim] F32</param>
    /// <param name="vCache">same shape as kCache</param>
    /// <param name="slotMapping">[tokens] I32 block*blockSize + offset (−1: skip)</param>
    public void RotateAndWriteKv(DeviceTensor q, DeviceTensor k, DeviceTensor v, DeviceTensor positions, DeviceTensor cosSin, int headDim,
        DeviceTensor kCache, DeviceTensor vCache, DeviceTensor slotMapping)
    {
        var shape = CheckRotateAndWriteKv(q, k, v, positions, cosSin, headDim, kCache, vCache, slotMapping);
        if (q.Dim(0) == 0) return;
        RotateAndWriteKvCore(q, k, v, positions, cosSin, shape, kCache, vCache, slotMapping);
    }

    RopeOps.RopeShape CheckRotateAndWriteKv(DeviceTensor q, DeviceTensor k, DeviceTensor v, DeviceTensor positions, DeviceTensor cosSin, int headDim,
        DeviceTensor kCache, DeviceTensor vCache, DeviceTensor slotMapping)
    {
        var shape = RopeOps.CheckCached(q, k, positions, cosSin, headDim);
        CheckWriteKv(kCache, vCache, k, v, slotMapping);
        Check.Disjoint(q, nameof(q), k, nameof(k));
        Check.Disjoint(q, nameof(q), v, nameof(v));
        Check.Disjoint(k, nameof(k), v, nameof(v));
        return shape;
    }

    static RotateKvViews Views(DeviceTensor q, DeviceTensor k, DeviceTensor v, DeviceTensor positions, DeviceTensor cosSin, DeviceTensor kCache,
        DeviceTensor vCache, DeviceTensor slotMapping) => new()
    {
        Q = q.F32, K = k.F32, V = v.F32, KCache = kCache.F32, VCache = vCache.F32, CosSin = cosSin.F32,
        Positions = positions.I32, Slots = slotMapping.I32,
    };

    /// <summary>
    /// <see cref="RotateAndWriteKv(DeviceTensor, DeviceTensor, DeviceTensor, DeviceTensor, DeviceTensor, int, DeviceTensor, DeviceTensor, DeviceTensor)"/>
    /// of q + qExpand, k + kExpand and v + vExpand, with the bits of <see cref="LoraOps.ExpandAt"/> into each first (q, k
    /// and v are left holding their deltas, as that leaves them). On a GPU with the wide expand (all three expands present,
    /// alike in token slots and slots) one launch adds them; elsewhere each expand is added into its tensor first.
    /// </summary>
    /// <param name="q">[tokens, heads*headDim] F32, rotated in place</param>
    /// <param name="k">[tokens, kvHeads*headDim] F32, rotated in place</param>
    /// <param name="v">[tokens, kvHeads*headDim] F32</param>
    /// <param name="positions">[tokens] I32, each below the table's maxPositions</param>
    /// <param name="cosSin">[maxPositions, headDim/2, 2] F32 (<see cref="RopeOps.CosSinTable"/>)</param>
    /// <param name="headDim">width of one head, positive and even</param>
    /// <param name="kCache">[numBlocks, blockSize, kvHeads, headDim] F32</param>
    /// <param name="vCache">same shape as kCache</param>
    /// <param name="slotMapping">[tokens] I32 block*blockSize + offset (−1: skip)</param>
    /// <param name="qExpand">what remains to add to q (null: nothing)</param>
    /// <param name="kExpand">what remains to add to k (null: nothing)</param>
    /// <param name="vExpand">what remains to add to v (null: nothing)</param>
    public void RotateAndWriteKv(DeviceTensor q, DeviceTensor k, DeviceTensor v, DeviceTensor positions, DeviceTensor cosSin, int headDim,
        DeviceTensor kCache, DeviceTensor vCache, DeviceTensor slotMapping, PendingExpand? qExpand, PendingExpand? kExpand, PendingExpand? vExpand)
    {
        ReadOnlySpan<(DeviceTensor, PendingExpand?)> pending = [(q, qExpand), (k, kExpand), (v, vExpand)];
        Span<ExpandSegment<U4, F4>> views = [default, default, default];
        if (_device.Lora.TryFusedViews(pending, views))
        {
            var shape = CheckRotateAndWriteKv(q, k, v, positions, cosSin, headDim, kCache, vCache, slotMapping);
            if (q.Dim(0) == 0) return;
            var expands = new QkvExpands { Q = views[0], K = views[1], V = views[2], Slots = qExpand!.TokenSlots.I32 };
            _rotateWriteKvExpand(_device.Stream, checked(q.Dim(0) * (shape.QWidth / 2 + shape.KWidth)), Views(q, k, v, positions, cosSin, kCache, vCache, slotMapping),
                shape, kCache.Dim(0) * kCache.Dim(1), expands);
            return;
        }
        _device.Lora.ExpandEach(pending);
        RotateAndWriteKv(q, k, v, positions, cosSin, headDim, kCache, vCache, slotMapping);
    }

    /// <summary>The launch of <see cref="RotateAndWriteKv(DeviceTensor, DeviceTensor, DeviceTensor, DeviceTensor, DeviceTensor, int, DeviceTensor, DeviceTensor, DeviceTensor)"/>, arguments checked.</summary>
    private protected virtual void RotateAndWriteKvCore(DeviceTensor q, DeviceTensor k, DeviceTensor v, DeviceTensor positions, DeviceTensor cosSin,
        RopeOps.RopeShape shape, DeviceTensor kCache, DeviceTensor vCache, DeviceTensor slotMapping)
    {
        _rotateWriteKv(_device.Stream, checked(q.Dim(0) * (shape.QWidth / 2 + shape.KWidth)), Views(q, k, v, positions, cosSin, kCache, vCache, slotMapping),
            shape, kCache.Dim(0) * kCache.Dim(1));
    }
}
