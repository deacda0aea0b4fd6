using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace LoraEngine.Tensors.Kernels;

/// <summary>
/// Causal attention over a paged KV cache (vLLM's layout): K and V of a layer are [numBlocks, blockSize,
/// kvHeads, headDim]; each sequence's block table maps its logical blocks to physical ones. One launch serves
/// prefill chunks and decode tokens of many sequences, with GQA/MQA. The CPU device overrides the launches with host code.
/// For head_dim 32, 64, 128 and 256 the kernels split each token's context (SplitAttentionKernels.cs) and own a device
/// workspace for the splits' partial results, freed by <see cref="Dispose"/> (the device disposes its families).
/// </summary>
public partial class AttentionOps : IDisposable
{
    /// <summary>Largest head_dim: each of a warp's 32 lanes holds up to 8 dimensions.</summary>
    public const int MaxHeadDim = 256;

    const int WarpsPerGroup = 4;
    const int ChunkPositions = 512; // scores of one chunk of positions live in shared memory

    readonly ComputeDevice _device;
    readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, int, int> _writeKv;
    readonly Action<AcceleratorStream, KernelConfig, AttentionViews, AttentionShape> _attention, _attentionWide;
    readonly Action<AcceleratorStream, KernelConfig, AttentionViews, AttentionShape>? _attentionSplit, _combineSplits; // with a workspace
    readonly int _narrowWarps; // warps a group of AttentionKernel: one where warps are drawn on the group (they diverge)
    readonly DeviceTensor? _partials; // [workspaceFloats] F32: the splits' (o, max, sum) records of the tokens of one launch

    /// <summary>Device bytes this family allocated for the split kernels' workspace (none on the CPU device).</summary>
    public long AllocatedWorkspaceBytes => _partials?.SizeInBytes ?? 0;

    internal AttentionOps(ComputeDevice device) : this(device, DefaultWorkspaceFloats)
    {
    }

    /// <param name="device">the device whose accelerator runs the kernels</param>
    /// <param name="workspaceFloats">floats of the split kernels' workspace, allocated once here (0: none, the split
    /// kernels unused); it only bounds how many tokens one launch takes, never a result</param>
    internal AttentionOps(ComputeDevice device, int workspaceFloats)
    {
        _device = device;
        var acc = device.Accelerator;
        _writeKv = device.Serialized(acc.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, int, int>(WriteKvKernel));
        _rotateWriteKv = device.Serialized(acc.LoadAutoGroupedKernel<Index1D, RotateKvViews, RopeOps.RopeShape, int>(RotateWriteKvKernel));
        _rotateWriteKvExpand = device.Serialized(acc.LoadAutoGroupedKernel<Index1D, RotateKvViews, RopeOps.RopeShape, int, QkvExpands>(RotateWriteKvExpandKernel));
        _narrowWarps = device.UsesGroupLanes ? 1 : WarpsPerGroup;
        (_attention, _attentionWide) = device.UsesGroupLanes ? LoadWithLanes<GroupLanes>(device) : LoadWithLanes<WarpLanes>(device);
        if (workspaceFloats <= 0) return;
        _attentionSplit = device.UsesGroupLanes
            ? device.Serialized(acc.LoadKernel<AttentionViews, AttentionShape>(SplitAttentionKernel<GroupLanes>))
            : device.Serialized(acc.LoadKernel<AttentionViews, AttentionShape>(SplitAttentionKernel<WarpLanes>));
        _combineSplits = device.Serialized(acc.LoadKernel<AttentionViews, AttentionShape>(CombineSplitsKernel));
        _partials = device.Allocate(DType.F32, workspaceFloats);
    }

    /// <summary>
    /// Whether the split kernels serve the head_dims they support (default); false launches the one-group-per-(token, head)
    /// wide kernel instead, for benchmarks that time both. Results differ in the last bits: set it before any use.
    /// </summary>
    internal bool SplitContext { get; set; } = true;

    /// <summary>The buffers of one attention launch (a struct keeps the kernel signature short).</summary>
    internal struct AttentionViews
    {
        public ArrayView<float> Output, Q, KCache, VCache;
        public ArrayView<int> BlockTables, TokenSeq, TokenPos;
        public ArrayView<F4> KCache4, VCache4; // the caches as 16-byte units (the wide and split kernels)
        public ArrayView<float> Partials;      // the split kernels' workspace
        public ArrayView<F4> Partials4;        // the same as 16-byte units
    }

    internal struct AttentionShape
    {
        public int Tokens, Heads, KvHeads, HeadDim, BlockSize, NumBlocks, MaxBlocks;
        public float Scale;
        // The split kernels: first token of the launch, head groups per KV head, MaxBlocks × BlockSize, splits per (token, head).
        public int TokenOffset, HeadGroups, MaxContext, GridSplits;
    }

    // kCache[slot[t]] = k[t], vCache[slot[t]] = v[t]; slot −1 (or outside the cache) skipped
    static void WriteKvKernel(Index1D i, ArrayView<float> kCache, ArrayView<float> vCache, ArrayView<float> k, ArrayView<float> v, ArrayView<int> slots, int kvWidth, int numSlots)
    {
        int t = i / kvWidth, d = i % kvWidth;
        int slot = slots[t];
        if (slot < 0 || slot >= numSlots) return;
        kCache[(long)slot * kvWidth + d] = k[i];
        vCache[(long)slot * kvWidth + d] = v[i];
    }

    /// <summary>The unsplit attention kernels (one warp a head, four warps a head) with the device's warps.</summary>
    static (Action<AcceleratorStream, KernelConfig, AttentionViews, AttentionShape>, Action<AcceleratorStream, KernelConfig, AttentionViews, AttentionShape>)
        LoadWithLanes<TLanes>(ComputeDevice device) where TLanes : struct, ILanes
    {
        var acc = device.Accelerator;
        return (
            device.Serialized(acc.LoadKernel<AttentionViews, AttentionShape>(AttentionKernel<TLanes>)),
            device.Serialized(acc.LoadKernel<AttentionViews, AttentionShape>(WideAttentionKernel<TLanes>)));
    }

    // out[t,h] = Σ_{p ≤ pos[t]} softmax_p(scale · q[t,h] · K[p,kvh]) · V[p,kvh], kvh = h / (heads / kvHeads):
    // one warp per (token, head), lanes split head_dim, online softmax over the sequence's cached positions.
    static void AttentionKernel<TLanes>(AttentionViews v, AttentionShape s) where TLanes : struct, ILanes
    {
        TLanes lanes = default;
        int warp = Grid.IdxX * (Group.DimX / 32) + lanes.WarpIdx;
        if (warp >= s.Tokens * s.Heads) return;
        int t = warp / s.Heads, h = warp % s.Heads;
        int kvh = h / (s.Heads / s.KvHeads);
        int seq = v.TokenSeq[t], pos = v.TokenPos[t];
        int lane = lanes.Lane;
        long qBase = ((long)t * s.Heads + h) * s.HeadDim;

        float q0 = Load(v.Q, qBase, lane, s.HeadDim) * s.Scale, q1 = Load(v.Q, qBase, lane + 32, s.HeadDim) * s.Scale;
        float q2 = Load(v.Q, qBase, lane + 64, s.HeadDim) * s.Scale, q3 = Load(v.Q, qBase, lane + 96, s.HeadDim) * s.Scale;
        float q4 = Load(v.Q, qBase, lane + 128, s.HeadDim) * s.Scale, q5 = Load(v.Q, qBase, lane + 160, s.HeadDim) * s.Scale;
        float q6 = Load(v.Q, qBase, lane + 192, s.HeadDim) * s.Scale, q7 = Load(v.Q, qBase, lane + 224, s.HeadDim) * s.Scale;
        float o0 = 0, o1 = 0, o2 = 0, o3 = 0, o4 = 0, o5 = 0, o6 = 0, o7 = 0;
        float max = float.NegativeInfinity, sum = 0;

        for (int p = 0; p <= pos; p++)
        {
            int logical = p / s.BlockSize;
            if (logical >= s.MaxBlocks) break;
            int block = v.BlockTables[(long)seq * s.MaxBlocks + logical];
            if (block < 0 || block >= s.NumBlocks) break;
            long kv = (((long)block * s.BlockSize + p % s.BlockSize) * s.KvHeads + kvh) * s.HeadDim;
            float dot = q0 * Load(v.KCache, kv, lane, s.HeadDim) + q1 * Load(v.KCache, kv, lane + 32, s.HeadDim)
                      + q2 * Load(v.KCache, kv, lane + 64, s.HeadDim) + q3 * Load(v.KCache, kv, lane + 96, s.HeadDim)
                      + q4 * Load(v.KCache, kv, lane + 128, s.HeadDim) + q5 * Load(v.KCache, kv, lane + 160, s.HeadDim)
                      + q6 * Load(v.KCache, kv, lane + 192, s.HeadDim) + q7 * Load(v.KCache, kv, lane + 224, s.HeadDim);
            float score = MatMulOps.WarpSum<TLanes>(dot);
            float newMax = XMath.Max(max, score);
            float correction = XMath.Exp(max - newMax);
            float weight = XMath.Exp(score - newMax);
            sum = sum * correction + weight;
            o0 = o0 * correction + weight * Load(v.VCache, kv, lane, s.HeadDim);
            o1 = o1 * correction + weight * Load(v.VCache, kv, lane + 32, s.HeadDim);
            o2 = o2 * correction + weight * Load(v.VCache, kv, lane + 64, s.HeadDim);
            o3 = o3 * correction + weight * Load(v.VCache, kv, lane + 96, s.HeadDim);
            o4 = o4 * correction + weight * Load(v.VCache, kv, lane + 128, s.HeadDim);
            o5 = o5 * correction + weight * Load(v.VCache, kv, lane + 160, s.HeadDim);
            o6 = o6 * correction + weight * Load(v.VCache, kv, lane + 192, s.HeadDim);
            o7 = o7 * correction + weight * Load(v.VCache, kv, lane + 224, s.HeadDim);
            max = newMax;
        }
        float inv = sum > 0 ? 1f / sum : 0f;
        Store(v.Output, qBase, lane, s.HeadDim, o0 * inv);
        Store(v.Output, qBase, lane + 32, s.HeadDim, o1 * inv);
        Store(v.Output, qBase, lane + 64, s.HeadDim, o2 * inv);
        Store(v.Output, qBase, lane + 96, s.HeadDim, o3 * inv);
        Store(v.Output, qBase, lane + 128, s.HeadDim, o4 * inv);
        Store(v.Output, qBase, lane + 160, s.HeadDim, o5 * inv);
        Store(v.Output, qBase, lane + 192, s.HeadDim, o6 * inv);
        Store(v.Output, qBase, lane + 224, s.HeadDim, o7 * inv);
    }

    // The same function as AttentionKernel, one group of 4 warps per (token, head), for head_dim in {8, 16, 32, 64, 128,
    // 256}. Positions come in chunks of 512: each thread scores its own positions (q·K with 16-byte loads, independent of
    // each other), the chunk's max is reduced over the group, then the values are accumulated with L = head_dim/8 lanes
    // per position (8 dimensions each, two 16-byte loads) and 32/L positions per warp at a time. The partial outputs and
    // sums (all relative to the same running max) are added in a fixed order: lanes by butterfly, then warps in order.
    // Nothing depends on other tokens of the step: batch-invariant.
    static void WideAttentionKernel<TLanes>(AttentionViews v, AttentionShape s) where TLanes : struct, ILanes
    {
        TLanes lanes = default;
        var qs = SharedMemory.Allocate<float>(MaxHeadDim);
        var scores = SharedMemory.Allocate<float>(ChunkPositions);
        var outs = SharedMemory.Allocate<float>(WarpsPerGroup * MaxHeadDim);
        var red = SharedMemory.Allocate<float>(2 * WarpsPerGroup);
        int tid = Group.IdxX, warp = lanes.WarpIdx, lane = lanes.Lane;
        int threads = WarpsPerGroup * 32;
        int t = Grid.IdxX / s.Heads, h = Grid.IdxX % s.Heads;
        int kvh = h / (s.Heads / s.KvHeads);
        int seq = v.TokenSeq[t], ctx = v.TokenPos[t] + 1;
        long qBase = ((long)t * s.Heads + h) * s.HeadDim;
        for (int d = tid; d < s.HeadDim; d += threads) qs[d] = v.Q[qBase + d] * s.Scale;
        Group.Barrier();

        int hd4 = s.HeadDim / 4;
        int lanesPerPos = s.HeadDim / 8, posPerWarp = 32 / lanesPerPos;
        int sub = lane / lanesPerPos, dl = lane % lanesPerPos;
        float max = float.NegativeInfinity, sum = 0;
        float o0 = 0, o1 = 0, o2 = 0, o3 = 0, o4 = 0, o5 = 0, o6 = 0, o7 = 0;
        for (int c0 = 0; c0 < ctx; c0 += ChunkPositions)
        {
            int count = XMath.Min(ChunkPositions, ctx - c0);
            float localMax = float.NegativeInfinity;
            for (int i = tid; i < count; i += threads)
            {
                long kv = KvOffset(v, s, seq, c0 + i, kvh);
                float score = float.NegativeInfinity;
                if (kv >= 0)
                {
                    long k4 = kv / 4;
                    float dot = 0;
                    for (int j = 0; j < hd4; j++)
                    {
                        F4 k = v.KCache4[k4 + j];
                        dot += qs[4 * j] * k.X + qs[4 * j + 1] * k.Y + qs[4 * j + 2] * k.Z + qs[4 * j + 3] * k.W;
                    }
                    score = dot;
                }
                scores[i] = score;
                localMax = XMath.Max(localMax, score);
            }
            localMax = MatMulOps.WarpMax<TLanes>(localMax);
            if (lane == 0) red[warp] = localMax;
            Group.Barrier();
            float chunkMax = XMath.Max(XMath.Max(red[0], red[1]), XMath.Max(red[2], red[3]));
            float newMax = XMath.Max(max, chunkMax);
            float correction = max == float.NegativeInfinity ? 0f : XMath.Exp(max - newMax);
            sum *= correction;
            o0 *= correction; o1 *= correction; o2 *= correction; o3 *= correction;
            o4 *= correction; o5 *= correction; o6 *= correction; o7 *= correction;
            for (int i = warp * posPerWarp + sub; i < count; i += WarpsPerGroup * posPerWarp)
            {
                float score = scores[i];
                if (score == float.NegativeInfinity) continue;
                float weight = XMath.Exp(score - newMax);
                sum += weight;
                long v4 = KvOffset(v, s, seq, c0 + i, kvh) / 4 + 2 * dl;
                F4 a = v.VCache4[v4], b = v.VCache4[v4 + 1];
                o0 += weight * a.X; o1 += weight * a.Y; o2 += weight * a.Z; o3 += weight * a.W;
                o4 += weight * b.X; o5 += weight * b.Y; o6 += weight * b.Z; o7 += weight * b.W;
            }
            max = newMax;
            Group.Barrier(); // the next chunk overwrites scores and red
        }

        // Lanes holding the same dimensions for other positions: add them in butterfly order.
        for (int offset = lanesPerPos; offset < 32; offset <<= 1)
        {
            sum += lanes.Xor(sum, offset);
            o0 += lanes.Xor(o0, offset); o1 += lanes.Xor(o1, offset);
            o2 += lanes.Xor(o2, offset); o3 += lanes.Xor(o3, offset);
            o4 += lanes.Xor(o4, offset); o5 += lanes.Xor(o5, offset);
            o6 += lanes.Xor(o6, offset); o7 += lanes.Xor(o7, offset);
        }
        if (sub == 0)
        {
            int ob = warp * MaxHeadDim + 8 * dl;
            outs[ob] = o0; outs[ob + 1] = o1; outs[ob + 2] = o2; outs[ob + 3] = o3;
            outs[ob + 4] = o4; outs[ob + 5] = o5; outs[ob + 6] = o6; outs[ob + 7] = o7;
        }
        if (lane == 0) red[WarpsPerGroup + warp] = sum;
        Group.Barrier();
        float total = red[WarpsPerGroup] + red[WarpsPerGroup + 1] + red[WarpsPerGroup + 2] + red[WarpsPerGroup + 3];
        float inv = total > 0 ? 1f / total : 0f;
        for (int d = tid; d < s.HeadDim; d += threads)
            v.Output[qBase + d] = (outs[d] + outs[MaxHeadDim + d] + outs[2 * MaxHeadDim + d] + outs[3 * MaxHeadDim + d]) * inv;
    }

    /// <summary>Whether <see cref="WideAttentionKernel"/> serves this head_dim (8 dimensions a lane, lanes dividing 32).</summary>
    static bool WideSupports(int headDim) => headDim % 8 == 0 && headDim <= MaxHeadDim && 32 % (headDim / 8) == 0;

    /// <summary>Offset of (position p, kv head) of a sequence in the cache, or −1 when its block is not mapped.</summary>
    static long KvOffset(AttentionViews v, AttentionShape s, int seq, int p, int kvh)
    {
        int logical = p / s.BlockSize;
        if (logical >= s.MaxBlocks) return -1;
        int block = v.BlockTables[(long)seq * s.MaxBlocks + logical];
        if (block < 0 || block >= s.NumBlocks) return -1;
        return (((long)block * s.BlockSize + p % s.BlockSize) * s.KvHeads + kvh) * s.HeadDim;
    }

    static float Load(ArrayView<float> a, long baseIndex, int d, int headDim) => d < headDim ? a[baseIndex + d] : 0f;

    static void Store(ArrayView<float> a, long baseIndex, int d, int headDim, float value)
    {
        if (d < headDim) a[baseIndex + d] = value;
    }

    /// <summary>Writes each token's key and value into its cache slot (−1: skip).</summary>
    /// <param name="kCache">[numBlocks, blockSize, kvHeads, headDim] F32</param>
    /// <param name="vCache">same shape as kCache</param>
    /// <param name="k">[tokens, kvHeads*headDim] F32</param>
    /// <param name="v">[tokens, kvHeads*headDim] F32</param>
    /// <param name="slotMapping">[tokens] I32 block*blockSize + offset</param>
    public void WriteKv(DeviceTensor kCache, DeviceTensor vCache, DeviceTensor k, DeviceTensor v, DeviceTensor slotMapping)
    {
        CheckWriteKv(kCache, vCache, k, v, slotMapping);
        if (k.Length == 0) return;
        WriteKvCore(kCache, vCache, k, v, slotMapping);
    }

    static void CheckWriteKv(DeviceTensor kCache, DeviceTensor vCache, DeviceTensor k, DeviceTensor v, DeviceTensor slotMapping)
    {
        Check.DType(kCache, DType.F32, nameof(kCache));
        Check.Rank(kCache, 4, nameof(kCache));
        Check.DType(vCache, DType.F32, nameof(vCache));
        if (!vCache.Shape.SequenceEqual(kCache.Shape)) throw new ArgumentException($"vCache {vCache.ShapeString} differs from kCache {kCache.ShapeString}", nameof(vCache));
        int kvWidth = kCache.Dim(2) * kCache.Dim(3);
        Check.DType(k, DType.F32, nameof(k));
        Check.Rank(k, 2, nameof(k));
        int tokens = k.Dim(0);
        Check.Shape(k, nameof(k), tokens, kvWidth);
        Check.DType(v, DType.F32, nameof(v));
        Check.Shape(v, nameof(v), tokens, kvWidth);
        Check.DType(slotMapping, DType.I32, nameof(slotMapping));
        Check.Shape(slotMapping, nameof(slotMapping), tokens);
    }

    /// <summary>The launch of <see cref="WriteKv"/>, arguments checked.</summary>
    private protected virtual void WriteKvCore(DeviceTensor kCache, DeviceTensor vCache, DeviceTensor k, DeviceTensor v, DeviceTensor slotMapping) =>
        _writeKv(_device.Stream, (int)k.Length, kCache.F32, vCache.F32, k.F32, v.F32, slotMapping.I32, kCache.Dim(2) * kCache.Dim(3), kCache.Dim(0) * kCache.Dim(1));

    /// <summary>Causal paged attention for every token of a step.</summary>
    /// <param name="output">[tokens, heads*headDim] F32</param>
    /// <param name="q">[tokens, heads*headDim] F32 (RoPE applied)</param>
    /// <param name="kCache">[numBlocks, blockSize, kvHeads, headDim] F32</param>
    /// <param name="vCache">same shape as kCache</param>
    /// <param name="blockTables">[sequences, maxBlocksPerSequence] I32</param>
    /// <param name="tokenSeq">[tokens] I32 row of blockTables</param>
    /// <param name="tokenPos">[tokens] I32 position; the token attends to positions 0..pos of its sequence</param>
    /// <param name="numHeads">query heads (positive)</param>
    /// <param name="numKvHeads">key/value heads, dividing numHeads (GQA/MQA: each serves numHeads / numKvHeads query heads)</param>
    /// <param name="headDim">width of one head, at most MaxHeadDim</param>
    /// <param name="scale">multiplies q·k before the softmax, positive and finite (usually 1/sqrt(headDim))</param>
    public void PagedAttention(DeviceTensor output, DeviceTensor q, DeviceTensor kCache, DeviceTensor vCache, DeviceTensor blockTables,
        DeviceTensor tokenSeq, DeviceTensor tokenPos, int numHeads, int numKvHeads, int headDim, float scale)
    {
        if (numHeads <= 0) throw new ArgumentOutOfRangeException(nameof(numHeads), numHeads, "must be positive");
        if (numKvHeads <= 0 || numHeads % numKvHeads != 0)
            throw new ArgumentOutOfRangeException(nameof(numKvHeads), numKvHeads, $"must divide numHeads ({numHeads})");
        if (headDim <= 0 || headDim > MaxHeadDim) throw new ArgumentOutOfRangeException(nameof(headDim), headDim, $"must be in 1..{MaxHeadDim}");
        if (!(scale > 0) || float.IsInfinity(scale)) throw new ArgumentOutOfRangeException(nameof(scale), scale, "must be positive and finite");
        Check.DType(q, DType.F32, nameof(q));
        Check.Rank(q, 2, nameof(q));
        int tokens = q.Dim(0);
        Check.Shape(q, nameof(q), tokens, numHeads * headDim);
        Check.DType(output, DType.F32, nameof(output));
        Check.Shape(output, nameof(output), tokens, numHeads * headDim);
        Check.DType(kCache, DType.F32, nameof(kCache));
        Check.Shape(kCache, nameof(kCache), -1, -1, numKvHeads, headDim);
        Check.DType(vCache, DType.F32, nameof(vCache));
        if (!vCache.Shape.SequenceEqual(kCache.Shape)) throw new ArgumentException($"vCache {vCache.ShapeString} differs from kCache {kCache.ShapeString}", nameof(vCache));
        Check.DType(blockTables, DType.I32, nameof(blockTables));
        Check.Rank(blockTables, 2, nameof(blockTables));
        Check.DType(tokenSeq, DType.I32, nameof(tokenSeq));
        Check.Shape(tokenSeq, nameof(tokenSeq), tokens);
        Check.DType(tokenPos, DType.I32, nameof(tokenPos));
        Check.Shape(tokenPos, nameof(tokenPos), tokens);
        if (tokens == 0) return;

        var shape = new AttentionShape
        {
            Tokens = tokens, Heads = numHeads, KvHeads = numKvHeads, HeadDim = headDim, BlockSize = kCache.Dim(1),
            NumBlocks = kCache.Dim(0), MaxBlocks = blockTables.Dim(1), Scale = scale,
        };
        PagedAttentionCore(output, q, kCache, vCache, blockTables, tokenSeq, tokenPos, shape);
    }

    /// <summary>The launch of <see cref="PagedAttention"/>, arguments checked.</summary>
    private protected virtual void PagedAttentionCore(DeviceTensor output, DeviceTensor q, DeviceTensor kCache, DeviceTensor vCache,
        DeviceTensor blockTables, DeviceTensor tokenSeq, DeviceTensor tokenPos, AttentionShape shape)
    {
        var views = new AttentionViews
        {
            Output = output.F32, Q = q.F32, KCache = kCache.F32, VCache = vCache.F32,
            BlockTables = blockTables.I32, TokenSeq = tokenSeq.I32, TokenPos = tokenPos.I32,
        };
        int warps = shape.Tokens * shape.Heads;
        shape.MaxContext = (int)Math.Min(int.MaxValue, (long)shape.MaxBlocks * shape.BlockSize);
        shape.GridSplits = GridSplitsFor(shape.MaxContext);
        long recordsPerToken = (long)shape.Heads * shape.GridSplits * RecordFloats(shape.HeadDim);
        int tokensPerLaunch = _partials == null ? 0 : (int)Math.Min(shape.Tokens, _partials.Length / recordsPerToken);
        if (SplitContext && SplitSupports(shape.HeadDim) && tokensPerLaunch > 0)
        {
            // The choice depends on shapes only, never on the tokens' contexts: every token of a model takes one path.
            views.KCache4 = kCache.F32.Cast<F4>();
            views.VCache4 = vCache.F32.Cast<F4>();
            views.Partials = _partials!.F32;
            views.Partials4 = views.Partials.Cast<F4>();
            shape.HeadGroups = (shape.Heads / shape.KvHeads + MaxGroupHeads - 1) / MaxGroupHeads;
            for (int first = 0; first < shape.Tokens; first += tokensPerLaunch)
            {
                int n = Math.Min(tokensPerLaunch, shape.Tokens - first);
                shape.TokenOffset = first;
                _attentionSplit!(_device.Stream, new KernelConfig(n * shape.KvHeads * shape.HeadGroups * shape.GridSplits, SplitThreads), views, shape);
                if (shape.GridSplits > 1) // else every token had one split, written out by the split kernel
                    _combineSplits!(_device.Stream, new KernelConfig(n * shape.Heads, SplitThreads), views, shape);
            }
        }
        else if (WideSupports(shape.HeadDim))
        {
            views.KCache4 = kCache.F32.Cast<F4>();
            views.VCache4 = vCache.F32.Cast<F4>();
            _attentionWide(_device.Stream, new KernelConfig(warps, WarpsPerGroup * 32), views, shape);
        }
        else
        {
            _attention(_device.Stream, new KernelConfig((warps + _narrowWarps - 1) / _narrowWarps, _narrowWarps * 32), views, shape);
        }
    }

    /// <summary>Frees the split kernels' workspace. Idempotent.</summary>
    public void Dispose()
    {
        _partials?.Dispose();
        GC.SuppressFinalize(this);
    }
}
