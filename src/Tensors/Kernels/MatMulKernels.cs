using ILGPU;
using ILGPU.Runtime;

namespace LoraEngine.Tensors.Kernels;

/// <summary>
/// Linear layers y[t] = W · x[t] with W stored [out, in] (safetensors layout) in F32, F16 or BF16 and F32
/// accumulation. Decode shapes (≤ 8 tokens) take a GEMV kernel that streams each weight row once for all
/// tokens; larger batches take a shared-memory tiled GEMM. The CPU device overrides the launches with host code.
/// </summary>
public class MatMulOps
{
    /// <summary>Tokens one GEMV launch accumulates at once.</summary>
    public const int MaxGemvTokens = 8;

    /// <summary>
    /// Batches up to this size run as GEMV launches of 8 tokens each: a layer's weights (≤ 32 MB at the 1B shape) stay
    /// in L2 between launches, the grid fills the GPU (the 64-output GEMM tiles gave 32 blocks on 132 SMs at bs32), and a
    /// token's result is computed the same way whatever its batch.
    /// </summary>
    public const int MaxChunkedGemvTokens = 64;

    const int GemvWarps = 4;     // output rows per group, one warp each
    const int TileTokens = 32;   // GEMM tile: 32 tokens × 64 outputs, k-steps of 32
    const int TileOut = 64;
    const int TileK = 32;
    const int TilePitch = TileK + 1; // padding against shared-memory bank conflicts
    const int GemmThreads = 256;

    readonly ComputeDevice _device;
    readonly TensorCoreLinear? _tensorCores;

    /// <summary>Device bytes this family allocated for the tensor-core linears' workspace (the slice-split kernel's partial sums; none off CUDA).</summary>
    public long AllocatedWorkspaceBytes => _tensorCores != null ? TensorCoreLinear.WorkspaceBytes : 0;

    /// <summary>The tensor-core linear this family launches for BF16 weights (CUDA only; null elsewhere).</summary>
    internal TensorCoreLinear? TensorCores => _tensorCores;
    readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int> _gemvF32, _gemmF32;
    readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, int, int, int> _gemvBf16, _gemmBf16;
    readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, int, int, int> _gemvF16, _gemmF16;
    readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<ulong>, int, int, int> _gemvBf16x4;

    internal MatMulOps(ComputeDevice device)
    {
        _device = device;
        _tensorCores = TensorCoreLinear.TryCreate(device);
        var acc = device.Accelerator;
        (_gemvF32, _gemvBf16, _gemvF16, _gemvBf16x4) = device.UsesGroupLanes ? LoadGemvs<GroupLanes>(device) : LoadGemvs<WarpLanes>(device);
        _gemmF32 = device.Serialized(acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int>(GemmKernel<float, F32Decoder>));
        _gemmBf16 = device.Serialized(acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<ushort>, int, int, int>(GemmKernel<ushort, Bf16Decoder>));
        _gemmF16 = device.Serialized(acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<ushort>, int, int, int>(GemmKernel<ushort, F16Decoder>));
    }

    /// <summary>The GEMV kernels (F32, BF16, F16, BF16 with 8-byte loads) with the device's warps.</summary>
    static (Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int>,
        Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, int, int, int>,
        Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, int, int, int>,
        Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<ulong>, int, int, int>) LoadGemvs<TLanes>(ComputeDevice device)
        where TLanes : struct, ILanes
    {
        var acc = device.Accelerator;
        return (
            device.Serialized(acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int>(GemvKernel<float, F32Decoder, TLanes>)),
            device.Serialized(acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<ushort>, int, int, int>(GemvKernel<ushort, Bf16Decoder, TLanes>)),
            device.Serialized(acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<ushort>, int, int, int>(GemvKernel<ushort, F16Decoder, TLanes>)),
            device.Serialized(acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<ulong>, int, int, int>(GemvBf16x4Kernel<TLanes>)));
    }

    // y[t, o] = Σ_i W[o, i] · x[t, i] for t < tokens ≤ 8: one warp per output row o, lanes stride over i,
    // one accumulator per token, then a warp reduction. Each weight element is read once for all tokens.
    // A warp past the last row reads nothing but still takes part in the reduction (uniform over the group for GroupLanes).
    static void GemvKernel<TW, TDec, TLanes>(ArrayView<float> y, ArrayView<float> x, ArrayView<TW> w, int tokens, int outF, int inF)
        where TW : unmanaged where TDec : struct, IWeightDecoder<TW> where TLanes : struct, ILanes
    {
        TLanes lanes = default;
        int o = Grid.IdxX * GemvWarps + lanes.WarpIdx;
        int end = o < outF ? inF : 0;
        TDec dec = default;
        long row = (long)o * inF;
        float a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
        for (int i = lanes.Lane; i < end; i += 32)
        {
            float wv = dec.Decode(w[row + i]);
            a0 += wv * x[i];
            if (tokens > 1) a1 += wv * x[inF + i];
            if (tokens > 2) a2 += wv * x[2 * inF + i];
            if (tokens > 3) a3 += wv * x[3 * inF + i];
            if (tokens > 4) a4 += wv * x[4 * inF + i];
            if (tokens > 5) a5 += wv * x[5 * inF + i];
            if (tokens > 6) a6 += wv * x[6 * inF + i];
            if (tokens > 7) a7 += wv * x[7 * inF + i];
        }
        StoreRow<TLanes>(y, tokens, outF, o, a0, a1, a2, a3, a4, a5, a6, a7);
    }

    // The BF16 GEMV with 8-byte weight loads (4 values per lane per step) for in % 4 == 0: a quarter of the load
    // instructions of the scalar kernel, so more bytes in flight per warp. y[t, o] = Σ_i W[o, i] · x[t, i], t < tokens ≤ 8.
    static void GemvBf16x4Kernel<TLanes>(ArrayView<float> y, ArrayView<float> x, ArrayView<ulong> w4, int tokens, int outF, int inF)
        where TLanes : struct, ILanes
    {
        TLanes lanes = default;
        int o = Grid.IdxX * GemvWarps + lanes.WarpIdx;
        int in4 = o < outF ? inF / 4 : 0;
        long row = (long)o * in4;
        float a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
        for (int j = lanes.Lane; j < in4; j += 32)
        {
            ulong bits = w4[row + j];
            float w0 = Interop.IntAsFloat((uint)(bits << 16) & 0xFFFF0000u), w1 = Interop.IntAsFloat((uint)bits & 0xFFFF0000u);
            float w2 = Interop.IntAsFloat((uint)(bits >> 16) & 0xFFFF0000u), w3 = Interop.IntAsFloat((uint)(bits >> 32) & 0xFFFF0000u);
            int i = 4 * j;
            a0 += Dot4(x, i, w0, w1, w2, w3);
            if (tokens > 1) a1 += Dot4(x, inF + i, w0, w1, w2, w3);
            if (tokens > 2) a2 += Dot4(x, 2 * inF + i, w0, w1, w2, w3);
            if (tokens > 3) a3 += Dot4(x, 3 * inF + i, w0, w1, w2, w3);
            if (tokens > 4) a4 += Dot4(x, 4 * inF + i, w0, w1, w2, w3);
            if (tokens > 5) a5 += Dot4(x, 5 * inF + i, w0, w1, w2, w3);
            if (tokens > 6) a6 += Dot4(x, 6 * inF + i, w0, w1, w2, w3);
            if (tokens > 7) a7 += Dot4(x, 7 * inF + i, w0, w1, w2, w3);
        }
        StoreRow<TLanes>(y, tokens, outF, o, a0, a1, a2, a3, a4, a5, a6, a7);
    }

    /// <summary>Reduces each token's per-lane partial sums over the warp and lane 0 writes y[t, o] (o &lt; outF).</summary>
    static void StoreRow<TLanes>(ArrayView<float> y, int tokens, int outF, int o, float a0, float a1, float a2, float a3, float a4, float a5, float a6, float a7)
        where TLanes : struct, ILanes
    {
        a0 = WarpSum<TLanes>(a0);
        if (tokens > 1) a1 = WarpSum<TLanes>(a1);
        if (tokens > 2) a2 = WarpSum<TLanes>(a2);
        if (tokens > 3) a3 = WarpSum<TLanes>(a3);
        if (tokens > 4) a4 = WarpSum<TLanes>(a4);
        if (tokens > 5) a5 = WarpSum<TLanes>(a5);
        if (tokens > 6) a6 = WarpSum<TLanes>(a6);
        if (tokens > 7) a7 = WarpSum<TLanes>(a7);
        if (default(TLanes).Lane != 0 || o >= outF) return;
        y[o] = a0;
        if (tokens > 1) y[outF + o] = a1;
        if (tokens > 2) y[2 * outF + o] = a2;
        if (tokens > 3) y[3 * outF + o] = a3;
        if (tokens > 4) y[4 * outF + o] = a4;
        if (tokens > 5) y[5 * outF + o] = a5;
        if (tokens > 6) y[6 * outF + o] = a6;
        if (tokens > 7) y[7 * outF + o] = a7;
    }

    static float Dot4(ArrayView<float> x, long i, float w0, float w1, float w2, float w3) =>
        w0 * x[i] + w1 * x[i + 1] + w2 * x[i + 2] + w3 * x[i + 3];

    /// <summary>Sum over the warp in a fixed butterfly order (the same for every launch: batch-invariant).</summary>
    internal static float WarpSum<TLanes>(float v) where TLanes : struct, ILanes
    {
        for (int offset = 16; offset > 0; offset >>= 1) v += default(TLanes).Xor(v, offset);
        return v;
    }

    /// <summary>Max over the warp (every lane gets it).</summary>
    internal static float WarpMax<TLanes>(float v) where TLanes : struct, ILanes
    {
        for (int offset = 16; offset > 0; offset >>= 1) v = ILGPU.Algorithms.XMath.Max(v, default(TLanes).Xor(v, offset));
        return v;
    }

    // y[t, o] = Σ_i W[o, i] · x[t, i]: a group computes a 32-token × 64-output tile, staging 32-wide k slices
    // of x and W (decoded to F32) in shared memory; each thread owns 2 tokens × 4 outputs.
    static void GemmKernel<TW, TDec>(ArrayView<float> y, ArrayView<float> x, ArrayView<TW> w, int tokens, int outF, int inF)
        where TW : unmanaged where TDec : struct, IWeightDecoder<TW>
    {
        var xs = SharedMemory.Allocate<float>(TileTokens * TilePitch);
        var ws = SharedMemory.Allocate<float>(TileOut * TilePitch);
        TDec dec = default;
        int tid = Group.IdxX;
        int t0 = Grid.IdxY * TileTokens, o0 = Grid.IdxX * TileOut;
        int tx = tid % 16, ty = tid / 16;
        float c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
        for (int k0 = 0; k0 < inF; k0 += TileK)
        {
            for (int e = tid; e < TileTokens * TileK; e += GemmThreads)
            {
                int r = e / TileK, c = e % TileK, t = t0 + r, k = k0 + c;
                xs[r * TilePitch + c] = t < tokens && k < inF ? x[(long)t * inF + k] : 0f;
            }
            for (int e = tid; e < TileOut * TileK; e += GemmThreads)
            {
                int r = e / TileK, c = e % TileK, o = o0 + r, k = k0 + c;
                ws[r * TilePitch + c] = o < outF && k < inF ? dec.Decode(w[(long)o * inF + k]) : 0f;
            }
            Group.Barrier();
            for (int kk = 0; kk < TileK; kk++)
            {
                float x0 = xs[(2 * ty) * TilePitch + kk], x1 = xs[(2 * ty + 1) * TilePitch + kk];
                float w0 = ws[tx * TilePitch + kk], w1 = ws[(tx + 16) * TilePitch + kk];
                float w2 = ws[(tx + 32) * TilePitch + kk], w3 = ws[(tx + 48) * TilePitch + kk];
                c00 += x0 * w0; c01 += x0 * w1; c02 += x0 * w2; c03 += x0 * w3;
                c10 += x1 * w0; c11 += x1 * w1; c12 += x1 * w2; c13 += x1 * w3;
            }
            Group.Barrier();
        }
        int ta = t0 + 2 * ty, tb = ta + 1;
        Store(y, ta, tokens, o0 + tx, outF, c00);
        Store(y, ta, tokens, o0 + tx + 16, outF, c01);
        Store(y, ta, tokens, o0 + tx + 32, outF, c02);
        Store(y, ta, tokens, o0 + tx + 48, outF, c03);
        Store(y, tb, tokens, o0 + tx, outF, c10);
        Store(y, tb, tokens, o0 + tx + 16, outF, c11);
        Store(y, tb, tokens, o0 + tx + 32, outF, c12);
        Store(y, tb, tokens, o0 + tx + 48, outF, c13);
    }

    static void Store(ArrayView<float> y, int t, int tokens, int o, int outF, float v)
    {
        if (t < tokens && o < outF) y[(long)t * outF + o] = v;
    }

    /// <summary>y[t, o] = Σ_i W[o, i] · x[t, i].</summary>
    /// <param name="y">[tokens, out] F32 (must not alias x)</param>
    /// <param name="x">[tokens, in] F32</param>
    /// <param name="w">[out, in] F32, F16 or BF16</param>
    public void Linear(DeviceTensor y, DeviceTensor x, DeviceTensor w)
    {
        Check.DType(x, DType.F32, nameof(x));
        Check.Rank(x, 2, nameof(x));
        Check.FloatWeight(w, nameof(w));
        Check.Rank(w, 2, nameof(w));
        int tokens = x.Dim(0), inF = x.Dim(1), outF = w.Dim(0);
        if (w.Dim(1) != inF) throw new ArgumentException($"w has shape {w.ShapeString} but x has {inF} features", nameof(w));
        Check.DType(y, DType.F32, nameof(y));
        Check.Shape(y, nameof(y), tokens, outF);
        if (tokens == 0 || outF == 0) return;
        if (inF == 0)
        {
            y.Clear();
            return;
        }
        LinearCore(y, x, w, tokens, inF, outF);
    }

    /// <summary>The launches of <see cref="Linear"/>, arguments checked and no dimension zero.</summary>
    private protected virtual void LinearCore(DeviceTensor y, DeviceTensor x, DeviceTensor w, int tokens, int inF, int outF)
    {
        if (_tensorCores != null && TensorCoreLinear.Supports(x, w))
        {
            _tensorCores.Launch(x, [(y, w)]);
            return;
        }
        if (tokens <= MaxChunkedGemvTokens)
        {
            var config = new KernelConfig((outF + GemvWarps - 1) / GemvWarps, GemvWarps * 32);
            for (int t0 = 0; t0 < tokens; t0 += MaxGemvTokens)
            {
                int n = Math.Min(MaxGemvTokens, tokens - t0);
                var ys = y.Slice(t0, n).F32;
                var xs = x.Slice(t0, n).F32;
                switch (w.DType)
                {
                    case DType.F32: _gemvF32(_device.Stream, config, ys, xs, w.F32, n, outF, inF); break;
                    case DType.BF16 when inF % 4 == 0: _gemvBf16x4(_device.Stream, config, ys, xs, w.U16.Cast<ulong>(), n, outF, inF); break;
                    case DType.BF16: _gemvBf16(_device.Stream, config, ys, xs, w.U16, n, outF, inF); break;
                    default: _gemvF16(_device.Stream, config, ys, xs, w.U16, n, outF, inF); break;
                }
            }
        }
        else
        {
            var config = new KernelConfig(new Index2D((outF + TileOut - 1) / TileOut, (tokens + TileTokens - 1) / TileTokens), new Index2D(GemmThreads, 1));
            switch (w.DType)
            {
                case DType.F32: _gemmF32(_device.Stream, config, y.F32, x.F32, w.F32, tokens, outF, inF); break;
                case DType.BF16: _gemmBf16(_device.Stream, config, y.F32, x.F32, w.U16, tokens, outF, inF); break;
                default: _gemmF16(_device.Stream, config, y.F32, x.F32, w.U16, tokens, outF, inF); break;
            }
        }
    }

    /// <summary>
    /// y_i = W_i · x for several linears sharing one input (q/k/v, gate/up): one launch on the tensor cores, else one
    /// <see cref="Linear"/> each. Each y_i gets exactly the values <see cref="Linear"/> would give it.
    /// </summary>
    public void LinearGroup(DeviceTensor x, ReadOnlySpan<(DeviceTensor Y, DeviceTensor W)> outputs)
    {
        if (outputs.Length == 0) return;
        bool fused = _tensorCores != null && outputs.Length <= TensorCoreLinear.MaxSegments && x.Dim(0) > 0;
        foreach (var (y, w) in outputs)
        {
            Check.FloatWeight(w, nameof(outputs));
            fused &= TensorCoreLinear.Supports(x, w) && w.Dim(1) == x.Dim(1) && y.DType == DType.F32
                && y.Shape.SequenceEqual([x.Dim(0), w.Dim(0)]);
        }
        if (!fused)
        {
            foreach (var (y, w) in outputs) Linear(y, x, w);
            return;
        }
        Check.DType(x, DType.F32, nameof(x));
        _tensorCores!.Launch(x, outputs);
    }
}
