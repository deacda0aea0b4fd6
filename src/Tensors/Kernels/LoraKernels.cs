using ILGPU;
using ILGPU.Runtime;

namespace LoraEngine.Tensors.Kernels;

/// <summary>
/// Batched LoRA for a mixed batch (vLLM's punica shrink/expand): each token uses the adapter in its own slot,
/// all tokens in one launch. Slot-stacked A [slots, maxRank, in] and B [slots, out, maxRank], rank zero-padded.
/// The CPU device overrides the launches with host code.
/// </summary>
public class LoraOps
{
    const int ShrinkThreads = 256;

    readonly ComputeDevice _device;
    readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, LoraShape> _shrinkF32;
    readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, ArrayView<int>, LoraShape> _shrinkBf16;
    readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<ILGPU.Half>, ArrayView<int>, LoraShape> _shrinkF16;
    readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, LoraShape> _expandF32;
    readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, ArrayView<int>, LoraShape> _expandBf16;
    readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<ILGPU.Half>, ArrayView<int>, LoraShape> _expandF16;

    internal struct LoraShape
    {
        public int Tokens, Slots, Rank, In, Out;
        public int YStride, YOffset; // expand: y's row width and the first column written (Out and 0 but for a column range)
    }

    internal LoraOps(ComputeDevice device)
    {
        _device = device;
        var acc = device.Accelerator;
        _shrinkF32 = acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, LoraShape>(ShrinkKernel<float, F32Decoder>);
        _shrinkBf16 = acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<ushort>, ArrayView<int>, LoraShape>(ShrinkKernel<ushort, Bf16Decoder>);
        _shrinkF16 = acc.LoadKernel<ArrayView<float>, ArrayView<float>, ArrayView<ILGPU.Half>, ArrayView<int>, LoraShape>(ShrinkKernel<ILGPU.Half, F16Decoder>);
        _expandF32 = acc.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, LoraShape>(ExpandKernel<float, F32Decoder>);
        _expandBf16 = acc.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, ArrayView<int>, LoraShape>(ExpandKernel<ushort, Bf16Decoder>);
        _expandF16 = acc.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<ILGPU.Half>, ArrayView<int>, LoraShape>(ExpandKernel<ILGPU.Half, F16Decoder>);
    }

    // buffer[t, r] = A[s, r, :] · x[t, :], s = slot[t]; s = −1 (or out of range): buffer[t, :] = 0.
    // One group of 256 threads per (t, r): threads stride over the input (independent loads), then warp butterflies and
    // the warps' sums in order — a fixed order for every batch.
    static void ShrinkKernel<TW, TDec>(ArrayView<float> buffer, ArrayView<float> x, ArrayView<TW> a, ArrayView<int> slots, LoraShape s)
        where TW : unmanaged where TDec : struct, IWeightDecoder<TW>
    {
        var partial = SharedMemory.Allocate<float>(ShrinkThreads / 32);
        int t = Grid.IdxX / s.Rank, r = Grid.IdxX % s.Rank;
        int slot = slots[t];
        if (slot < 0 || slot >= s.Slots)
        {
            if (Group.IdxX == 0) buffer[(long)t * s.Rank + r] = 0;
            return;
        }
        TDec dec = default;
        long aRow = ((long)slot * s.Rank + r) * s.In, xRow = (long)t * s.In;
        float sum = 0;
        for (int i = Group.IdxX; i < s.In; i += ShrinkThreads) sum += dec.Decode(a[aRow + i]) * x[xRow + i];
        sum = MatMulOps.WarpSum(sum);
        if (Warp.LaneIdx == 0) partial[Warp.WarpIdx] = sum;
        Group.Barrier();
        if (Group.IdxX != 0) return;
        float total = 0;
        for (int w = 0; w < ShrinkThreads / 32; w++) total += partial[w];
        buffer[(long)t * s.Rank + r] = total;
    }

    // y[t, off + o] += B[s, o, :] · buffer[t, :], s = slot[t]; s = −1 (or out of range): skip.   One thread per (t, o).
    static void ExpandKernel<TW, TDec>(Index1D i, ArrayView<float> y, ArrayView<float> buffer, ArrayView<TW> b, ArrayView<int> slots, LoraShape s)
        where TW : unmanaged where TDec : struct, IWeightDecoder<TW>
    {
        int t = i / s.Out, o = i % s.Out;
        int slot = slots[t];
        if (slot < 0 || slot >= s.Slots) return;
        TDec dec = default;
        long bRow = ((long)slot * s.Out + o) * s.Rank, buf = (long)t * s.Rank;
        float sum = 0;
        int r = 0;
        for (; r + 4 <= s.Rank; r += 4) // four independent loads in flight
            sum += dec.Decode(b[bRow + r]) * buffer[buf + r] + dec.Decode(b[bRow + r + 1]) * buffer[buf + r + 1]
                 + dec.Decode(b[bRow + r + 2]) * buffer[buf + r + 2] + dec.Decode(b[bRow + r + 3]) * buffer[buf + r + 3];
        for (; r < s.Rank; r++) sum += dec.Decode(b[bRow + r]) * buffer[buf + r];
        y[(long)t * s.YStride + s.YOffset + o] += sum;
    }

    /// <summary>buffer[t, r] = A[slot[t], r, :] · x[t, :]; zero rows for slot −1.</summary>
    /// <param name="buffer">[tokens, maxRank] F32</param>
    /// <param name="x">[tokens, in] F32</param>
    /// <param name="a">[slots, maxRank, in] F32/F16/BF16</param>
    /// <param name="tokenSlots">[tokens] I32</param>
    public void Shrink(DeviceTensor buffer, DeviceTensor x, DeviceTensor a, DeviceTensor tokenSlots)
    {
        var s = Validate(x, a, tokenSlots, nameof(a));
        s.In = a.Dim(2);
        if (x.Dim(1) != s.In) throw new ArgumentException($"x has {x.Dim(1)} features, A has {s.In}", nameof(x));
        Check.DType(buffer, DType.F32, nameof(buffer));
        Check.Shape(buffer, nameof(buffer), s.Tokens, s.Rank);
        if (s.Tokens == 0) return;
        ShrinkCore(buffer, x, a, tokenSlots, s);
    }

    /// <summary>The launch of <see cref="Shrink"/>, arguments checked.</summary>
    private protected virtual void ShrinkCore(DeviceTensor buffer, DeviceTensor x, DeviceTensor a, DeviceTensor tokenSlots, LoraShape s)
    {
        var config = new KernelConfig(s.Tokens * s.Rank, ShrinkThreads);
        switch (a.DType)
        {
            case DType.F32: _shrinkF32(_device.Stream, config, buffer.F32, x.F32, a.F32, tokenSlots.I32, s); break;
            case DType.BF16: _shrinkBf16(_device.Stream, config, buffer.F32, x.F32, a.U16, tokenSlots.I32, s); break;
            default: _shrinkF16(_device.Stream, config, buffer.F32, x.F32, a.AsHalf(), tokenSlots.I32, s); break;
        }
    }

    /// <summary>y[t, o] += B[slot[t], o, :] · buffer[t, :]; tokens with slot −1 untouched.</summary>
    /// <param name="y">[tokens, out] F32</param>
    /// <param name="buffer">[tokens, maxRank] F32</param>
    /// <param name="b">[slots, out, maxRank] F32/F16/BF16 (scale folded in)</param>
    /// <param name="tokenSlots">[tokens] I32</param>
    public void Expand(DeviceTensor y, DeviceTensor buffer, DeviceTensor b, DeviceTensor tokenSlots) => Expand(y, buffer, b, tokenSlots, outputOffset: null);

    /// <summary>
    /// y[t, offset + o] += B[slot[t], o, :] · buffer[t, :] for o &lt; out: the delta of B's out rows into a column range
    /// of a wider y (a tensor-parallel rank's share of a row-parallel output); tokens with slot −1 untouched.
    /// </summary>
    /// <param name="y">[tokens, width] F32, width ≥ offset + out</param>
    /// <param name="buffer">[tokens, maxRank] F32</param>
    /// <param name="b">[slots, out, maxRank] F32/F16/BF16 (scale folded in)</param>
    /// <param name="tokenSlots">[tokens] I32</param>
    /// <param name="outputOffset">the first column of y written, ≥ 0</param>
    public void Expand(DeviceTensor y, DeviceTensor buffer, DeviceTensor b, DeviceTensor tokenSlots, int outputOffset)
    {
        if (outputOffset < 0) throw new ArgumentOutOfRangeException(nameof(outputOffset), outputOffset, "the first column written must be non-negative");
        Expand(y, buffer, b, tokenSlots, (int?)outputOffset);
    }

    // Both overloads: outputOffset null means y is exactly [tokens, out].
    void Expand(DeviceTensor y, DeviceTensor buffer, DeviceTensor b, DeviceTensor tokenSlots, int? outputOffset)
    {
        Check.FloatWeight(b, nameof(b));
        Check.Rank(b, 3, nameof(b));
        var s = Validate(buffer, b, tokenSlots, nameof(b), rankDim: 2);
        s.Out = b.Dim(1);
        if (buffer.Dim(1) != s.Rank) throw new ArgumentException($"buffer has {buffer.Dim(1)} columns, B has rank {s.Rank}", nameof(buffer));
        Check.DType(y, DType.F32, nameof(y));
        if (outputOffset is not int offset)
        {
            Check.Shape(y, nameof(y), s.Tokens, s.Out);
            s.YOffset = 0;
        }
        else
        {
            Check.Rank(y, 2, nameof(y));
            if (y.Dim(0) != s.Tokens || y.Dim(1) < offset + s.Out)
                throw new ArgumentException($"y {y.ShapeString} has no columns [{offset}, {offset + s.Out}) for {s.Tokens} tokens", nameof(y));
            s.YOffset = offset;
        }
        s.YStride = y.Dim(1);
        if (s.Tokens == 0 || s.Out == 0) return;
        ExpandCore(y, buffer, b, tokenSlots, s);
    }

    /// <summary>The launch of <see cref="Expand(DeviceTensor, DeviceTensor, DeviceTensor, DeviceTensor, int)"/>, arguments checked.</summary>
    private protected virtual void ExpandCore(DeviceTensor y, DeviceTensor buffer, DeviceTensor b, DeviceTensor tokenSlots, LoraShape s)
    {
        int n = checked(s.Tokens * s.Out);
        switch (b.DType)
        {
            case DType.F32: _expandF32(_device.Stream, n, y.F32, buffer.F32, b.F32, tokenSlots.I32, s); break;
            case DType.BF16: _expandBf16(_device.Stream, n, y.F32, buffer.F32, b.U16, tokenSlots.I32, s); break;
            default: _expandF16(_device.Stream, n, y.F32, buffer.F32, b.AsHalf(), tokenSlots.I32, s); break;
        }
    }

    static LoraShape Validate(DeviceTensor input, DeviceTensor weights, DeviceTensor tokenSlots, string weightsName, int rankDim = 1)
    {
        Check.DType(input, DType.F32, rankDim == 1 ? "x" : "buffer");
        Check.Rank(input, 2, rankDim == 1 ? "x" : "buffer");
        Check.FloatWeight(weights, weightsName);
        Check.Rank(weights, 3, weightsName);
        int tokens = input.Dim(0);
        Check.DType(tokenSlots, DType.I32, nameof(tokenSlots));
        Check.Shape(tokenSlots, nameof(tokenSlots), tokens);
        return new LoraShape { Tokens = tokens, Slots = weights.Dim(0), Rank = weights.Dim(rankDim) };
    }
}
