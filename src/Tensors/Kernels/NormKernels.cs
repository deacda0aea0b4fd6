using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace LoraEngine.Tensors.Kernels;

/// <summary>RMSNorm as Llama applies it, one group per row (the CPU device overrides the launches with host code).</summary>
public class NormOps
{
    const int GroupSize = 1024; // one row per group: more loads in flight for one decode token

    readonly ComputeDevice _device;
    readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float> _rmsF32;
    readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, int, float> _rmsBf16;
    readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, int, float> _rmsF16;
    readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float> _addRmsF32;
    readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, int, float> _addRmsBf16;
    readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, int, float> _addRmsF16;
    // The same with a LoRA expand added to the residual delta as it is read (F32, BF16 and F16 norm weights).
    readonly Action<AcceleratorStream, KernelConfig, AddRmsViews<float>, ArrayView<int>, ExpandSegment<U4, F4>, int, float> _addRmsExpandF32;
    readonly Action<AcceleratorStream, KernelConfig, AddRmsViews<ushort>, ArrayView<int>, ExpandSegment<U4, F4>, int, float> _addRmsExpandBf16;
    readonly Action<AcceleratorStream, KernelConfig, AddRmsViews<ushort>, ArrayView<int>, ExpandSegment<U4, F4>, int, float> _addRmsExpandF16;

    internal NormOps(ComputeDevice device)
    {
        _device = device;
        (_rmsF32, _rmsBf16, _rmsF16, _addRmsF32, _addRmsBf16, _addRmsF16) = device.UsesGroupLanes ? Load<GroupLanes>(device) : Load<WarpLanes>(device);
        (_addRmsExpandF32, _addRmsExpandBf16, _addRmsExpandF16) = device.UsesGroupLanes ? LoadExpand<GroupLanes>(device) : LoadExpand<WarpLanes>(device);
    }

    /// <summary>The residual add + RMSNorm kernels that add a pending LoRA expand to the delta (F32, BF16, F16 weights).</summary>
    static (Action<AcceleratorStream, KernelConfig, AddRmsViews<float>, ArrayView<int>, ExpandSegment<U4, F4>, int, float>,
        Action<AcceleratorStream, KernelConfig, AddRmsViews<ushort>, ArrayView<int>, ExpandSegment<U4, F4>, int, float>,
        Action<AcceleratorStream, KernelConfig, AddRmsViews<ushort>, ArrayView<int>, ExpandSegment<U4, F4>, int, float>) LoadExpand<TLanes>(ComputeDevice device)
        where TLanes : struct, ILanes
    {
        var acc = device.Accelerator;
        return (
            device.Serialized(acc.LoadKernel<AddRmsViews<float>, ArrayView<int>, ExpandSegment<U4, F4>, int, float>(AddRmsNormExpandKernel<float, F32Decoder, TLanes>)),
            device.Serialized(acc.LoadKernel<AddRmsViews<ushort>, ArrayView<int>, ExpandSegment<U4, F4>, int, float>(AddRmsNormExpandKernel<ushort, Bf16Decoder, TLanes>)),
            device.Serialized(acc.LoadKernel<AddRmsViews<ushort>, ArrayView<int>, ExpandSegment<U4, F4>, int, float>(AddRmsNormExpandKernel<ushort, F16Decoder, TLanes>)));
    }

    /// <summary>The tensors of one fused residual add + RMSNorm launch: y = rmsnorm(x += d) · w.</summary>
    internal struct AddRmsViews<TW> where TW : unmanaged
    {
        public ArrayView<float> Y, X, D;
        public ArrayView<TW> W;
    }

    /// <summary>The kernels (RMSNorm F32, BF16, F16 weights; then the fused residual add) with the device's warps.</summary>
    static (Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float>,
        Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, int, float>,
        Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, int, float>,
        Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float>,
        Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, int, float>,
        Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, int, float>) Load<TLanes>(ComputeDevice device)
        where TLanes : struct, ILanes
    {
        var acc = device.Accelerator;
        return (
            device.Serialized(acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float>(RmsNormKernel<float, F32Decoder, TLanes>)),
            device.Serialized(acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<ushort>, int, float>(RmsNormKernel<ushort, Bf16Decoder, TLanes>)),
            device.Serialized(acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<ushort>, int, float>(RmsNormKernel<ushort, F16Decoder, TLanes>)),
            device.Serialized(acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float>(AddRmsNormKernel<float, F32Decoder, TLanes>)),
            device.Serialized(acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, int, float>(AddRmsNormKernel<ushort, Bf16Decoder, TLanes>)),
            device.Serialized(acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, int, float>(AddRmsNormKernel<ushort, F16Decoder, TLanes>)));
    }

    // y[t,:] = x[t,:] * rsqrt(mean(x[t,:]²) + eps) * w[:]     (one group per row t)
    static void RmsNormKernel<TW, TDec, TLanes>(ArrayView<float> y, ArrayView<float> x, ArrayView<TW> w, int dim, float eps)
        where TW : unmanaged where TDec : struct, IWeightDecoder<TW> where TLanes : struct, ILanes
    {
        long row = (long)Grid.IdxX * dim;
        float sum = 0f;
        for (int i = Group.IdxX; i < dim; i += Group.DimX)
        {
            float v = x[row + i];
            sum += v * v;
        }
        float scale = XMath.Rsqrt(GroupSum<TLanes>(sum) / dim + eps);
        TDec dec = default;
        for (int i = Group.IdxX; i < dim; i += Group.DimX)
            y[row + i] = x[row + i] * scale * dec.Decode(w[i]);
    }

    // x[t,:] += d[t,:]; y[t,:] = rmsnorm(x[t,:]) · w[:]     (the residual add fused into the norm that follows it)
    // A thread's first two elements and their weights stay in registers across the reduction (dim ≤ 2 × 1024 needs no
    // second read): in a decode step the kernel is a chain of dependent memory latencies, one fewer each way.
    static void AddRmsNormKernel<TW, TDec, TLanes>(ArrayView<float> y, ArrayView<float> x, ArrayView<float> d, ArrayView<TW> w, int dim, float eps)
        where TW : unmanaged where TDec : struct, IWeightDecoder<TW> where TLanes : struct, ILanes =>
        AddRmsNormRow<TW, TDec, TLanes, NoExpand>(new AddRmsViews<TW> { Y = y, X = x, D = d, W = w }, default, -1, dim, eps);

    // The same with d[t, i] + (its pending LoRA expand) as the delta, as LoraOps.ExpandAt then AddRmsNorm give it.
    static void AddRmsNormExpandKernel<TW, TDec, TLanes>(AddRmsViews<TW> v, ArrayView<int> slots, ExpandSegment<U4, F4> e, int dim, float eps)
        where TW : unmanaged where TDec : struct, IWeightDecoder<TW> where TLanes : struct, ILanes =>
        AddRmsNormRow<TW, TDec, TLanes, WithExpand>(v, e, LoraOps.ExpandSlot(slots, e, Grid.IdxX), dim, eps);

    static void AddRmsNormRow<TW, TDec, TLanes, TMode>(AddRmsViews<TW> v, ExpandSegment<U4, F4> e, int slot, int dim, float eps)
        where TW : unmanaged where TDec : struct, IWeightDecoder<TW> where TLanes : struct, ILanes where TMode : struct, IExpandMode
    {
        int t = Grid.IdxX;
        long row = (long)t * dim;
        int i0 = Group.IdxX, i1 = i0 + Group.DimX;
        TDec dec = default;
        float v0 = 0, v1 = 0, w0 = 0, w1 = 0, sum = 0f;
        if (i0 < dim)
        {
            v0 = AddResidual<TW, TMode>(v, e, slot, t, i0, row, ref sum);
            w0 = dec.Decode(v.W[i0]);
        }
        if (i1 < dim)
        {
            v1 = AddResidual<TW, TMode>(v, e, slot, t, i1, row, ref sum);
            w1 = dec.Decode(v.W[i1]);
        }
        for (int i = i1 + Group.DimX; i < dim; i += Group.DimX) AddResidual<TW, TMode>(v, e, slot, t, i, row, ref sum);
        float scale = XMath.Rsqrt(GroupSum<TLanes>(sum) / dim + eps);
        if (i0 < dim) v.Y[row + i0] = v0 * scale * w0;
        if (i1 < dim) v.Y[row + i1] = v1 * scale * w1;
        for (int i = i1 + Group.DimX; i < dim; i += Group.DimX)
            v.Y[row + i] = v.X[row + i] * scale * dec.Decode(v.W[i]);
    }

    /// <summary>x[t, i] += d[t, i] (plus its pending expand, when there is one); sum += x[t, i]²; returns the new x[t, i].</summary>
    static float AddResidual<TW, TMode>(AddRmsViews<TW> v, ExpandSegment<U4, F4> e, int slot, int t, int i, long row, ref float sum)
        where TW : unmanaged where TMode : struct, IExpandMode
    {
        long at = row + i;
        float d = v.D[at];
        if (default(TMode).On && slot >= 0) d += LoraOps.ExpandSum(e, slot, t, i);
        float x = v.X[at] + d;
        v.X[at] = x;
        sum += x * x;
        return x;
    }

    /// <summary>Sum over the group (≤ 32 warps): warp butterflies, then warp 0 adds the warps' sums in order.</summary>
    static float GroupSum<TLanes>(float v) where TLanes : struct, ILanes
    {
        var partial = SharedMemory.Allocate<float>(32);
        TLanes lanes = default;
        v = MatMulOps.WarpSum<TLanes>(v);
        if (lanes.Lane == 0) partial[lanes.WarpIdx] = v;
        Group.Barrier();
        int warps = (Group.DimX + 31) / 32;
        float total = 0;
        for (int i = 0; i < warps; i++) total += partial[i];
        return total;
    }

    /// <summary>The residual add fused with the RMSNorm after it: x[t,:] += delta[t,:]; y[t,:] = rmsnorm(x[t,:]) · weight[:].</summary>
    /// <param name="y">[tokens, dim] F32 output (not aliasing x or delta)</param>
    /// <param name="x">[tokens, dim] F32 residual stream, updated in place</param>
    /// <param name="delta">[tokens, dim] F32</param>
    /// <param name="weight">[dim] F32, F16 or BF16</param>
    /// <param name="eps">added to the mean square before the root (config.json's rms_norm_eps)</param>
    public void AddRmsNorm(DeviceTensor y, DeviceTensor x, DeviceTensor delta, DeviceTensor weight, float eps)
    {
        Check.DType(delta, DType.F32, nameof(delta));
        Check.Shape(delta, nameof(delta), x.Dim(0), x.Dim(1));
        var (tokens, dim) = CheckNorm(y, x, weight, eps);
        if (tokens == 0 || dim == 0) return;
        AddRmsNormCore(y, x, delta, weight, eps);
    }

    /// <summary>
    /// <see cref="AddRmsNorm(DeviceTensor, DeviceTensor, DeviceTensor, DeviceTensor, float)"/> with delta's pending LoRA
    /// expand added to it: x[t,:] += delta[t,:] + expand[t,:], with the bits of <see cref="LoraOps.ExpandAt"/> into delta then
    /// the norm. On a GPU with the wide expand one launch adds both; elsewhere the expand is added into delta first (delta is
    /// left holding delta + expand then, else unchanged).
    /// </summary>
    /// <param name="y">[tokens, dim] F32 output (not aliasing x or delta)</param>
    /// <param name="x">[tokens, dim] F32 residual stream, updated in place</param>
    /// <param name="delta">[tokens, dim] F32</param>
    /// <param name="deltaExpand">what remains to add to delta (null: nothing)</param>
    /// <param name="weight">[dim] F32, F16 or BF16</param>
    /// <param name="eps">added to the mean square before the root (config.json's rms_norm_eps)</param>
    public void AddRmsNorm(DeviceTensor y, DeviceTensor x, DeviceTensor delta, PendingExpand? deltaExpand, DeviceTensor weight, float eps)
    {
        if (deltaExpand is null)
        {
            AddRmsNorm(y, x, delta, weight, eps);
            return;
        }
        Check.DType(delta, DType.F32, nameof(delta));
        Check.Shape(delta, nameof(delta), x.Dim(0), x.Dim(1));
        var (tokens, dim) = CheckNorm(y, x, weight, eps);
        if (!_device.Lora.TryFusedView(delta, deltaExpand, out var view))
        {
            _device.Lora.ExpandAt(delta, deltaExpand);
            if (tokens > 0 && dim > 0) AddRmsNormCore(y, x, delta, weight, eps);
            return;
        }
        if (tokens == 0 || dim == 0) return;
        var config = new KernelConfig(tokens, Math.Min(GroupSize, RoundUpToWarp(dim)));
        var slots = deltaExpand.TokenSlots.I32;
        switch (weight.DType)
        {
            case DType.F32: _addRmsExpandF32(_device.Stream, config, new AddRmsViews<float> { Y = y.F32, X = x.F32, D = delta.F32, W = weight.F32 }, slots, view, dim, eps); break;
            case DType.BF16: _addRmsExpandBf16(_device.Stream, config, new AddRmsViews<ushort> { Y = y.F32, X = x.F32, D = delta.F32, W = weight.U16 }, slots, view, dim, eps); break;
            default: _addRmsExpandF16(_device.Stream, config, new AddRmsViews<ushort> { Y = y.F32, X = x.F32, D = delta.F32, W = weight.U16 }, slots, view, dim, eps); break;
        }
    }

    /// <summary>The launch of <see cref="AddRmsNorm(DeviceTensor, DeviceTensor, DeviceTensor, DeviceTensor, float)"/>, arguments checked.</summary>
    private protected virtual void AddRmsNormCore(DeviceTensor y, DeviceTensor x, DeviceTensor delta, DeviceTensor weight, float eps)
    {
        int tokens = x.Dim(0), dim = x.Dim(1);
        var config = new KernelConfig(tokens, Math.Min(GroupSize, RoundUpToWarp(dim)));
        switch (weight.DType)
        {
            case DType.F32: _addRmsF32(_device.Stream, config, y.F32, x.F32, delta.F32, weight.F32, dim, eps); break;
            case DType.BF16: _addRmsBf16(_device.Stream, config, y.F32, x.F32, delta.F32, weight.U16, dim, eps); break;
            default: _addRmsF16(_device.Stream, config, y.F32, x.F32, delta.F32, weight.U16, dim, eps); break;
        }
    }

    static (int Tokens, int Dim) CheckNorm(DeviceTensor y, DeviceTensor x, DeviceTensor weight, float eps)
    {
        Check.DType(x, DType.F32, nameof(x));
        Check.Rank(x, 2, nameof(x));
        int tokens = x.Dim(0), dim = x.Dim(1);
        Check.DType(y, DType.F32, nameof(y));
        Check.Shape(y, nameof(y), tokens, dim);
        Check.FloatWeight(weight, nameof(weight));
        Check.Shape(weight, nameof(weight), dim);
        if (!(eps > 0) || float.IsInfinity(eps)) throw new ArgumentOutOfRangeException(nameof(eps), eps, "eps must be positive and finite");
        return (tokens, dim);
    }

    /// <summary>RMSNorm of each row: y[t,:] = x[t,:] * rsqrt(mean(x[t,:]²) + eps) * weight[:].</summary>
    /// <param name="y">[tokens, dim] F32 output (may be <paramref name="x"/>)</param>
    /// <param name="x">[tokens, dim] F32</param>
    /// <param name="weight">[dim] F32, F16 or BF16</param>
    /// <param name="eps">added to the mean square before the root (config.json's rms_norm_eps)</param>
    public void RmsNorm(DeviceTensor y, DeviceTensor x, DeviceTensor weight, float eps)
    {
        var (tokens, dim) = CheckNorm(y, x, weight, eps);
        if (tokens == 0 || dim == 0) return;
        RmsNormCore(y, x, weight, eps);
    }

    /// <summary>The launch of <see cref="RmsNorm"/>, arguments checked.</summary>
    private protected virtual void RmsNormCore(DeviceTensor y, DeviceTensor x, DeviceTensor weight, float eps)
    {
        int tokens = x.Dim(0), dim = x.Dim(1);
        var config = new KernelConfig(tokens, Math.Min(GroupSize, RoundUpToWarp(dim)));
        switch (weight.DType)
        {
            case DType.F32: _rmsF32(_device.Stream, config, y.F32, x.F32, weight.F32, dim, eps); break;
            case DType.BF16: _rmsBf16(_device.Stream, config, y.F32, x.F32, weight.U16, dim, eps); break;
            default: _rmsF16(_device.Stream, config, y.F32, x.F32, weight.U16, dim, eps); break;
        }
    }

    internal static int RoundUpToWarp(int n) => (n + 31) / 32 * 32;
}
