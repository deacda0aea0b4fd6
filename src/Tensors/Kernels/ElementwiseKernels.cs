using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace LoraEngine.Tensors.Kernels;

/// <summary>Residual add, SwiGLU and the embedding gather (the CPU device overrides the launches with host code).</summary>
public class ElementwiseOps
{
    readonly ComputeDevice _device;
    readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>> _addInPlace;
    readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>> _swiGlu;
    readonly Action<AcceleratorStream, Index1D, SwiGluViews, ArrayView<int>, ExpandSegment<U4, F4>, ExpandSegment<U4, F4>> _swiGluExpand;
    readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int> _embedF32;
    readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<int>, ArrayView<ushort>, int, int> _embedBf16;
    readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<int>, ArrayView<ushort>, int, int> _embedF16;

    internal ElementwiseOps(ComputeDevice device)
    {
        _device = device;
        var acc = device.Accelerator;
        _addInPlace = device.Serialized(acc.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>>(AddInPlaceKernel));
        _swiGlu = device.Serialized(acc.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>>(SwiGluKernel));
        _swiGluExpand = device.Serialized(acc.LoadAutoGroupedKernel<Index1D, SwiGluViews, ArrayView<int>, ExpandSegment<U4, F4>, ExpandSegment<U4, F4>>(SwiGluExpandKernel));
        _embedF32 = device.Serialized(acc.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int>(EmbeddingKernel<float, F32Decoder>));
        _embedBf16 = device.Serialized(acc.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<ushort>, int, int>(EmbeddingKernel<ushort, Bf16Decoder>));
        _embedF16 = device.Serialized(acc.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<ushort>, int, int>(EmbeddingKernel<ushort, F16Decoder>));
    }

    // x[i] += y[i]
    static void AddInPlaceKernel(Index1D i, ArrayView<float> x, ArrayView<float> y) => x[i] += y[i];

    // out[i] = silu(gate[i]) * up[i],  silu(g) = g / (1 + exp(-g))
    static void SwiGluKernel(Index1D i, ArrayView<float> output, ArrayView<float> gate, ArrayView<float> up)
    {
        float g = gate[i];
        output[i] = g / (1f + XMath.Exp(-g)) * up[i];
    }

    // The same with gate's and up's pending LoRA expands added as they are read (LoraOps.ExpandAt on each, then SwiGlu)
    static void SwiGluExpandKernel(Index1D i, SwiGluViews v, ArrayView<int> slots, ExpandSegment<U4, F4> gateExpand, ExpandSegment<U4, F4> upExpand)
    {
        int t = i / gateExpand.Out, o = i % gateExpand.Out;
        float g = v.Gate[i], u = v.Up[i];
        int slot = LoraOps.ExpandSlot(slots, gateExpand, t);
        if (slot >= 0)
        {
            g += LoraOps.ExpandSum(gateExpand, slot, t, o);
            u += LoraOps.ExpandSum(upExpand, slot, t, o);
        }
        v.Output[i] = g / (1f + XMath.Exp(-g)) * u;
    }

    /// <summary>The tensors of one SwiGLU launch.</summary>
    internal struct SwiGluViews
    {
        public ArrayView<float> Output, Gate, Up;
    }

    // out[t, d] = table[ids[t], d]; an id outside [0, vocab) gives zeros (never an out-of-bounds read)
    static void EmbeddingKernel<TW, TDec>(Index1D i, ArrayView<float> output, ArrayView<int> ids, ArrayView<TW> table, int dim, int vocab)
        where TW : unmanaged where TDec : struct, IWeightDecoder<TW>
    {
        int t = i / dim, d = i % dim;
        int id = ids[t];
        output[i] = id >= 0 && id < vocab ? default(TDec).Decode(table[(long)id * dim + d]) : 0f;
    }

    /// <summary>Residual add in place: x[i] += y[i].</summary>
    public void AddInPlace(DeviceTensor x, DeviceTensor y)
    {
        Check.DType(x, DType.F32, nameof(x));
        Check.DType(y, DType.F32, nameof(y));
        if (!x.Shape.SequenceEqual(y.Shape)) throw new ArgumentException($"y has shape {y.ShapeString}, x has {x.ShapeString}", nameof(y));
        if (x.Length == 0) return;
        AddInPlaceCore(x, y);
    }

    /// <summary>The launch of <see cref="AddInPlace"/>, arguments checked.</summary>
    private protected virtual void AddInPlaceCore(DeviceTensor x, DeviceTensor y) => _addInPlace(_device.Stream, (int)x.Length, x.F32, y.F32);

    /// <summary>SwiGLU: output[i] = silu(gate[i]) * up[i].</summary>
    /// <param name="output">[tokens, intermediate] F32 (may alias gate)</param>
    /// <param name="gate">[tokens, intermediate] F32</param>
    /// <param name="up">[tokens, intermediate] F32</param>
    public void SwiGlu(DeviceTensor output, DeviceTensor gate, DeviceTensor up)
    {
        CheckSwiGlu(output, gate, up);
        if (gate.Length == 0) return;
        SwiGluCore(output, gate, up);
    }

    static void CheckSwiGlu(DeviceTensor output, DeviceTensor gate, DeviceTensor up)
    {
        Check.DType(gate, DType.F32, nameof(gate));
        Check.DType(up, DType.F32, nameof(up));
        Check.DType(output, DType.F32, nameof(output));
        if (!gate.Shape.SequenceEqual(up.Shape)) throw new ArgumentException($"up has shape {up.ShapeString}, gate has {gate.ShapeString}", nameof(up));
        if (!gate.Shape.SequenceEqual(output.Shape)) throw new ArgumentException($"output has shape {output.ShapeString}, gate has {gate.ShapeString}", nameof(output));
    }

    /// <summary>
    /// SwiGLU of gate + gateExpand and up + upExpand, with the bits of <see cref="LoraOps.ExpandAt"/> into each then
    /// <see cref="SwiGlu(DeviceTensor, DeviceTensor, DeviceTensor)"/>. On a GPU with the wide expand (both expands alike:
    /// the same token slots, slots and rank) one launch adds both; elsewhere each expand is added into its input first.
    /// </summary>
    /// <param name="output">[tokens, intermediate] F32 (may alias gate)</param>
    /// <param name="gate">[tokens, intermediate] F32</param>
    /// <param name="up">[tokens, intermediate] F32</param>
    /// <param name="gateExpand">what remains to add to gate (null: nothing)</param>
    /// <param name="upExpand">what remains to add to up (null: nothing)</param>
    public void SwiGlu(DeviceTensor output, DeviceTensor gate, DeviceTensor up, PendingExpand? gateExpand, PendingExpand? upExpand)
    {
        ReadOnlySpan<(DeviceTensor, PendingExpand?)> pending = [(gate, gateExpand), (up, upExpand)];
        Span<ExpandSegment<U4, F4>> views = [default, default];
        if (_device.Lora.TryFusedViews(pending, views))
        {
            CheckSwiGlu(output, gate, up);
            if (gate.Length > 0) _swiGluExpand(_device.Stream, (int)gate.Length, new SwiGluViews { Output = output.F32, Gate = gate.F32, Up = up.F32 }, gateExpand!.TokenSlots.I32, views[0], views[1]);
            return;
        }
        _device.Lora.ExpandEach(pending);
        SwiGlu(output, gate, up);
    }

    /// <summary>The launch of <see cref="SwiGlu(DeviceTensor, DeviceTensor, DeviceTensor)"/>, arguments checked.</summary>
    private protected virtual void SwiGluCore(DeviceTensor output, DeviceTensor gate, DeviceTensor up) =>
        _swiGlu(_device.Stream, (int)gate.Length, output.F32, gate.F32, up.F32);

    /// <summary>Embedding gather: output[t, :] = table[ids[t], :]; ids outside [0, vocab) give a zero row.</summary>
    /// <param name="output">[tokens, dim] F32</param>
    /// <param name="ids">[tokens] I32</param>
    /// <param name="table">[vocab, dim] F32, F16 or BF16</param>
    public void Embedding(DeviceTensor output, DeviceTensor ids, DeviceTensor table)
    {
        Check.DType(ids, DType.I32, nameof(ids));
        Check.Rank(ids, 1, nameof(ids));
        Check.FloatWeight(table, nameof(table));
        Check.Rank(table, 2, nameof(table));
        Check.DType(output, DType.F32, nameof(output));
        Check.Shape(output, nameof(output), ids.Dim(0), table.Dim(1));
        if (output.Length == 0) return;
        EmbeddingCore(output, ids, table);
    }

    /// <summary>The launch of <see cref="Embedding"/>, arguments checked.</summary>
    private protected virtual void EmbeddingCore(DeviceTensor output, DeviceTensor ids, DeviceTensor table)
    {
        int n = checked(ids.Dim(0) * table.Dim(1)), dim = table.Dim(1), vocab = table.Dim(0);
        switch (table.DType)
        {
            case DType.F32: _embedF32(_device.Stream, n, output.F32, ids.I32, table.F32, dim, vocab); break;
            case DType.BF16: _embedBf16(_device.Stream, n, output.F32, ids.I32, table.U16, dim, vocab); break;
            default: _embedF16(_device.Stream, n, output.F32, ids.I32, table.U16, dim, vocab); break;
        }
    }
}
