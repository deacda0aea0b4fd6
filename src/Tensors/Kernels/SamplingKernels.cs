using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace LoraEngine.Tensors.Kernels;

/// <summary>
/// Row-wise softmax, log-softmax, argmax and top-k over logits [rows, vocab], one group per row (the CPU device
/// overrides the softmax and top-k launches with host code).
/// </summary>
public class SamplingOps
{
    const int GroupSize = 256;

    readonly ComputeDevice _device;
    readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, int, int> _softmax;
    readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int> _topK;
    readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int> _argmaxPartial;
    readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<int>, int> _argmaxFinal;
    readonly DeviceTensor? _partialValues, _partialIndices; // [MaxArgmaxRows * MaxArgmaxParts] (GPU only)

    /// <summary>Rows one <see cref="Argmax(DeviceTensor, DeviceTensor, DeviceTensor)"/> launch pair serves; more go in turns.</summary>
    const int MaxArgmaxRows = 256;
    const int MaxArgmaxParts = 64;

    internal SamplingOps(ComputeDevice device)
    {
        _device = device;
        var acc = device.Accelerator;
        _topK = device.Serialized(acc.LoadKernel<ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int>(TopKKernel));
        (_softmax, _argmaxPartial, _argmaxFinal) = device.UsesGroupLanes ? LoadWithLanes<GroupLanes>(device) : LoadWithLanes<WarpLanes>(device);
        if (!device.IsCpu)
        {
            // Allocated once: a CUDA graph that captured an argmax keeps these addresses.
            _partialValues = device.Allocate(DType.F32, MaxArgmaxRows * MaxArgmaxParts);
            _partialIndices = device.Allocate(DType.I32, MaxArgmaxRows * MaxArgmaxParts);
        }
    }

    /// <summary>Softmax, argmax pass 1 and pass 2 with the device's warps.</summary>
    static (Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<float>, int, int>,
        Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int>,
        Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<int>, int>) LoadWithLanes<TLanes>(ComputeDevice device)
        where TLanes : struct, ILanes
    {
        var acc = device.Accelerator;
        return (
            device.Serialized(acc.LoadKernel<ArrayView<float>, ArrayView<float>, int, int>(SoftmaxKernel<TLanes>)),
            device.Serialized(acc.LoadKernel<ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int>(ArgmaxPartialKernel<TLanes>)),
            device.Serialized(acc.LoadKernel<ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<int>, int>(ArgmaxFinalKernel<TLanes>)));
    }

    // Pass 1 of argmax: group (part p, row r) finds the best (value desc, index asc) of its slice of row r (NaN ranks
    // last) and writes it to partial[r·parts + p]. Pass 2 reduces a row's parts. The answer is the row's argmax whatever
    // the split, so it is the same for a row alone or in any batch.
    static void ArgmaxPartialKernel<TLanes>(ArrayView<float> partialValues, ArrayView<int> partialIndices, ArrayView<float> x, int vocab, int parts)
        where TLanes : struct, ILanes
    {
        TLanes lanes = default;
        var warpValues = SharedMemory.Allocate<float>(32);
        var warpIndices = SharedMemory.Allocate<int>(32);
        int r = Grid.IdxY, p = Grid.IdxX;
        int slice = (vocab + parts - 1) / parts, start = p * slice, end = XMath.Min(vocab, start + slice);
        long row = (long)r * vocab;
        float best = float.NegativeInfinity;
        int bestIndex = int.MaxValue;
        for (int i = start + Group.IdxX; i < end; i += Group.DimX)
        {
            float v = x[row + i];
            if (float.IsNaN(v)) v = float.NegativeInfinity;
            if (SampleMath.Better(v, i, best, bestIndex))
            {
                best = v;
                bestIndex = i;
            }
        }
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
        partialValues[(long)r * parts + p] = best;
        partialIndices[(long)r * parts + p] = bestIndex;
    }

    // Pass 2: one warp per row reduces its parts; a row whose values are all −∞/NaN gets index 0.
    static void ArgmaxFinalKernel<TLanes>(ArrayView<float> values, ArrayView<int> indices, ArrayView<float> partialValues, ArrayView<int> partialIndices, int parts)
        where TLanes : struct, ILanes
    {
        int lane = default(TLanes).Lane;
        int r = Grid.IdxX;
        float best = float.NegativeInfinity;
        int bestIndex = int.MaxValue;
        for (int p = lane; p < parts; p += 32)
            if (SampleMath.Better(partialValues[(long)r * parts + p], partialIndices[(long)r * parts + p], best, bestIndex))
            {
                best = partialValues[(long)r * parts + p];
                bestIndex = partialIndices[(long)r * parts + p];
            }
        SampleMath.WarpBest<TLanes>(ref best, ref bestIndex);
        if (lane != 0) return;
        values[r] = best;
        indices[r] = bestIndex == int.MaxValue ? 0 : bestIndex;
    }

    // y[r,i] = exp(x[r,i] − m) / Σ_j exp(x[r,j] − m)   (log: y = x − m − log Σ exp(x − m)), m = max_j x[r,j]
    static void SoftmaxKernel<TLanes>(ArrayView<float> y, ArrayView<float> x, int vocab, int log) where TLanes : struct, ILanes
    {
        TLanes lanes = default;
        long row = (long)Grid.IdxX * vocab;
        float localMax = float.NegativeInfinity;
        for (int i = Group.IdxX; i < vocab; i += Group.DimX) localMax = XMath.Max(localMax, x[row + i]);
        float max = lanes.GroupMax(localMax);
        float localSum = 0;
        for (int i = Group.IdxX; i < vocab; i += Group.DimX) localSum += XMath.Exp(x[row + i] - max);
        float sum = lanes.GroupSum(localSum);
        float logSum = XMath.Log(sum);
        for (int i = Group.IdxX; i < vocab; i += Group.DimX)
        {
            float shifted = x[row + i] - max;
            y[row + i] = log != 0 ? shifted - logSum : XMath.Exp(shifted) / sum;
        }
    }

    // (values[r,j], indices[r,j]) = the j-th largest of x[r,:] in the order (value desc, index asc): pass j takes the
    // best element strictly after pass j−1's, so no selected set is stored.
    static void TopKKernel(ArrayView<float> values, ArrayView<int> indices, ArrayView<float> x, int vocab, int k)
    {
        var bestValue = SharedMemory.Allocate<float>(GroupSize);
        var bestIndex = SharedMemory.Allocate<int>(GroupSize);
        long row = (long)Grid.IdxX * vocab;
        int tid = Group.IdxX;
        float prevValue = float.PositiveInfinity;
        int prevIndex = -1;
        for (int j = 0; j < k; j++)
        {
            float v = float.NegativeInfinity;
            int idx = int.MaxValue;
            for (int i = tid; i < vocab; i += GroupSize)
            {
                float xi = x[row + i];
                if (float.IsNaN(xi)) xi = float.NegativeInfinity; // NaN ranks last
                bool afterPrev = xi < prevValue || (xi == prevValue && i > prevIndex);
                if (afterPrev && (xi > v || (xi == v && i < idx)))
                {
                    v = xi;
                    idx = i;
                }
            }
            bestValue[tid] = v;
            bestIndex[tid] = idx;
            Group.Barrier();
            for (int stride = GroupSize / 2; stride > 0; stride >>= 1)
            {
                if (tid < stride)
                {
                    float ov = bestValue[tid + stride];
                    int oi = bestIndex[tid + stride];
                    if (ov > bestValue[tid] || (ov == bestValue[tid] && oi < bestIndex[tid]))
                    {
                        bestValue[tid] = ov;
                        bestIndex[tid] = oi;
                    }
                }
                Group.Barrier();
            }
            prevValue = bestValue[0];
            prevIndex = bestIndex[0];
            if (tid == 0)
            {
                values[(long)Grid.IdxX * k + j] = prevValue;
                indices[(long)Grid.IdxX * k + j] = prevIndex;
            }
            Group.Barrier();
        }
    }

    /// <summary>Softmax of each row: y[r,i] = exp(x[r,i]) / Σ_j exp(x[r,j]) (max-shifted).</summary>
    public void Softmax(DeviceTensor y, DeviceTensor x) => RowWise(y, x, log: false);

    /// <summary>Log-softmax of each row: y[r,i] = x[r,i] − log Σ_j exp(x[r,j]).</summary>
    public void LogSoftmax(DeviceTensor y, DeviceTensor x) => RowWise(y, x, log: true);

    void RowWise(DeviceTensor y, DeviceTensor x, bool log)
    {
        Check.DType(x, DType.F32, nameof(x));
        Check.Rank(x, 2, nameof(x));
        Check.DType(y, DType.F32, nameof(y));
        Check.Shape(y, nameof(y), x.Dim(0), x.Dim(1));
        if (x.Length == 0) return;
        RowWiseCore(y, x, log);
    }

    /// <summary>The launch of <see cref="Softmax"/> (or <see cref="LogSoftmax"/>), arguments checked.</summary>
    private protected virtual void RowWiseCore(DeviceTensor y, DeviceTensor x, bool log) =>
        _softmax(_device.Stream, new KernelConfig(x.Dim(0), GroupSize), y.F32, x.F32, x.Dim(1), log ? 1 : 0);

    /// <summary>Index of each row's largest value (ties: the lowest index).</summary>
    /// <param name="indices">[rows] I32</param>
    /// <param name="x">[rows, vocab] F32</param>
    public void Argmax(DeviceTensor indices, DeviceTensor x)
    {
        using var values = _device.Allocate(DType.F32, x.Dim(0));
        Argmax(indices, values, x);
    }

    /// <summary>Index and value of each row's largest value (ties: the lowest index); allocates nothing.</summary>
    /// <param name="indices">[rows] I32</param>
    /// <param name="values">[rows] F32</param>
    /// <param name="x">[rows, vocab] F32</param>
    public void Argmax(DeviceTensor indices, DeviceTensor values, DeviceTensor x)
    {
        Check.DType(indices, DType.I32, nameof(indices));
        Check.Rank(x, 2, nameof(x));
        Check.Shape(indices, nameof(indices), x.Dim(0));
        Check.Shape(values, nameof(values), x.Dim(0));
        if (_partialValues is null || x.Dim(1) == 0)
        {
            TopK(values.Reshape(x.Dim(0), 1), indices.Reshape(x.Dim(0), 1), x, 1);
            return;
        }
        Check.DType(x, DType.F32, nameof(x));
        Check.DType(values, DType.F32, nameof(values));
        int vocab = x.Dim(1), parts = Math.Clamp((vocab + 2047) / 2048, 1, MaxArgmaxParts);
        for (int r0 = 0; r0 < x.Dim(0); r0 += MaxArgmaxRows)
        {
            int rows = Math.Min(MaxArgmaxRows, x.Dim(0) - r0);
            var pv = _partialValues.Slice(0, rows * parts).F32;
            var pi = _partialIndices!.Slice(0, rows * parts).I32;
            _argmaxPartial(_device.Stream, new KernelConfig(new Index2D(parts, rows), new Index2D(GroupSize, 1)), pv, pi, x.Slice(r0, rows).F32, vocab, parts);
            _argmaxFinal(_device.Stream, new KernelConfig(rows, 32), values.Slice(r0, rows).F32, indices.Slice(r0, rows).I32, pv, pi, parts);
        }
    }

    /// <summary>The k largest values of each row, sorted descending (ties: lower index first).</summary>
    /// <param name="values">[rows, k] F32</param>
    /// <param name="indices">[rows, k] I32</param>
    /// <param name="x">[rows, vocab] F32</param>
    /// <param name="k">values kept per row, in 1..vocab</param>
    public void TopK(DeviceTensor values, DeviceTensor indices, DeviceTensor x, int k)
    {
        Check.DType(x, DType.F32, nameof(x));
        Check.Rank(x, 2, nameof(x));
        int rows = x.Dim(0), vocab = x.Dim(1);
        if (k <= 0 || k > vocab) throw new ArgumentOutOfRangeException(nameof(k), k, $"k must be in 1..{vocab}");
        Check.DType(values, DType.F32, nameof(values));
        Check.Shape(values, nameof(values), rows, k);
        Check.DType(indices, DType.I32, nameof(indices));
        Check.Shape(indices, nameof(indices), rows, k);
        if (rows == 0) return;
        TopKCore(values, indices, x, k);
    }

    /// <summary>The launch of <see cref="TopK"/>, arguments checked.</summary>
    private protected virtual void TopKCore(DeviceTensor values, DeviceTensor indices, DeviceTensor x, int k) =>
        _topK(_device.Stream, new KernelConfig(x.Dim(0), GroupSize), values.F32, indices.I32, x.F32, x.Dim(1), k);
}
