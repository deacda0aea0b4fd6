using ILGPU;
using ILGPU.Runtime;

namespace LoraEngine.Tensors.Kernels;

// RoPE on q and k and the KV-cache write of k and v in one launch: the two ops a layer runs between its q/k/v projection
// and its attention, with their arithmetic and order unchanged (a decode step launches once per layer instead of twice).
public partial class AttentionOps
{
    readonly Action<AcceleratorStream, Index1D, RotateKvViews, RopeOps.RopeShape, int> _rotateWriteKv;

    /// <summary>The buffers of one rotate-and-write launch.</summary>
    internal struct RotateKvViews
    {
        public ArrayView<float> Q, K, V, KCache, VCache, CosSin;
        public ArrayView<int> Positions, Slots;
    }

    // Per token: the q pairs (rotated in place), the k pairs (rotated in place, then written to the cache), the v pairs
    // (copied to the cache). A pair is (j, j + half) of one head, as RopeCachedKernel rotates it; positions outside the
    // table leave q and k unrotated, slots −1 (or outside the cache) skip the write, as ApplyCached then WriteKv do.
    static void RotateWriteKvKernel(Index1D i, RotateKvViews v, RopeOps.RopeShape s, int numSlots)
    {
        int half = s.HeadDim / 2;
        int qPairs = s.QWidth / 2, kvPairs = s.KWidth / 2, perToken = qPairs + 2 * kvPairs;
        int t = i / perToken, r = i % perToken;
        if (r >= qPairs + kvPairs)
        {
            int vSlot = v.Slots[t];
            if (vSlot < 0 || vSlot >= numSlots) return;
            r -= qPairs + kvPairs;
            int d = r / half * s.HeadDim + r % half;
            long from = (long)t * s.KWidth + d, to = (long)vSlot * s.KWidth + d;
            v.VCache[to] = v.V[from];
            v.VCache[to + half] = v.V[from + half];
            return;
        }
        var x = v.Q;
        int width = s.QWidth;
        bool isK = r >= qPairs;
        if (isK)
        {
            x = v.K;
            width = s.KWidth;
            r -= qPairs;
        }
        int head = r / half, j = r % half;
        long a = (long)t * width + head * s.HeadDim + j, b = a + half;
        int pos = v.Positions[t];
        float x1, x2;
        if (pos >= 0 && pos < s.MaxPositions) (x1, x2) = RopeOps.Rotate(x, a, b, v.CosSin, ((long)pos * half + j) * 2);
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
        var shape = RopeOps.CheckCached(q, k, positions, cosSin, headDim);
        CheckWriteKv(kCache, vCache, k, v, slotMapping);
        Check.Disjoint(q, nameof(q), k, nameof(k));
        Check.Disjoint(q, nameof(q), v, nameof(v));
        Check.Disjoint(k, nameof(k), v, nameof(v));
        if (q.Dim(0) == 0) return;
        RotateAndWriteKvCore(q, k, v, positions, cosSin, shape, kCache, vCache, slotMapping);
    }

    /// <summary>The launch of <see cref="RotateAndWriteKv"/>, arguments checked.</summary>
    private protected virtual void RotateAndWriteKvCore(DeviceTensor q, DeviceTensor k, DeviceTensor v, DeviceTensor positions, DeviceTensor cosSin,
        RopeOps.RopeShape shape, DeviceTensor kCache, DeviceTensor vCache, DeviceTensor slotMapping)
    {
        var views = new RotateKvViews
        {
            Q = q.F32, K = k.F32, V = v.F32, KCache = kCache.F32, VCache = vCache.F32, CosSin = cosSin.F32,
            Positions = positions.I32, Slots = slotMapping.I32,
        };
        _rotateWriteKv(_device.Stream, checked(q.Dim(0) * (shape.QWidth / 2 + shape.KWidth)), views, shape, kCache.Dim(0) * kCache.Dim(1));
    }
}
