using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace LoraEngine.Tensors.Kernels;

/// <summary>Rotary position embedding in Hugging Face Llama's rotate-half layout (the CPU device overrides the launches with host code).</summary>
public class RopeOps
{
    readonly ComputeDevice _device;
    readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int> _apply;
    readonly Action<AcceleratorStream, Index1D, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, RopeShape> _applyCached;

    internal struct RopeShape
    {
        public int QWidth, KWidth, HeadDim, MaxPositions;
    }

    internal RopeOps(ComputeDevice device)
    {
        _device = device;
        _apply = device.Serialized(device.Accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int>(RopeKernel));
        _applyCached = device.Serialized(device.Accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, RopeShape>(RopeCachedKernel));
    }

    // The same rotation of q and k in one launch, with (cos, sin) of pos·invFreq[j] read from a table made once:
    // cosSin[(pos·half + j)·2 + {0, 1}]. Positions outside the table are left unrotated (the engine never sends one).
    static void RopeCachedKernel(Index1D i, ArrayView<float> q, ArrayView<float> k, ArrayView<int> positions, ArrayView<float> cosSin, RopeShape s)
    {
        int half = s.HeadDim / 2;
        int qPairs = s.QWidth / 2, perToken = qPairs + s.KWidth / 2;
        int t = i / perToken, r = i % perToken;
        var x = q;
        int width = s.QWidth;
        if (r >= qPairs)
        {
            x = k;
            width = s.KWidth;
            r -= qPairs;
        }
        int pos = positions[t];
        if (pos < 0 || pos >= s.MaxPositions) return;
        int head = r / half, j = r % half;
        long a = (long)t * width + head * s.HeadDim + j, b = a + half;
        Rotate(x, a, b, cosSin, ((long)pos * half + j) * 2);
    }

    /// <summary>(x[a], x[b]) ← (x[a]·cos − x[b]·sin, x[b]·cos + x[a]·sin) with (cos, sin) at cosSin[cs]: every kernel that rotates from the table shares these products.</summary>
    internal static (float A, float B) Rotate(ArrayView<float> x, long a, long b, ArrayView<float> cosSin, long cs)
    {
        var (y1, y2) = Rotate(x[a], x[b], cosSin, cs);
        x[a] = y1;
        x[b] = y2;
        return (y1, y2);
    }

    /// <summary>(x1·cos − x2·sin, x2·cos + x1·sin) with (cos, sin) at cosSin[cs].</summary>
    internal static (float A, float B) Rotate(float x1, float x2, ArrayView<float> cosSin, long cs)
    {
        float c = cosSin[cs], sn = cosSin[cs + 1];
        return (x1 * c - x2 * sn, x2 * c + x1 * sn);
    }

    /// <summary>
    /// The (cos, sin) table <see cref="ApplyCached"/> reads: [maxPositions, headDim/2, 2], angle = pos·invFreq[j] in double
    /// precision as <see cref="Apply"/> computes it.
    /// </summary>
    public static float[] CosSinTable(ReadOnlySpan<float> invFreq, int maxPositions)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxPositions);
        int half = invFreq.Length;
        var table = new float[(long)maxPositions * half * 2];
        for (int p = 0; p < maxPositions; p++)
            for (int j = 0; j < half; j++)
            {
                double angle = (double)p * invFreq[j];
                table[((long)p * half + j) * 2] = (float)Math.Cos(angle);
                table[((long)p * half + j) * 2 + 1] = (float)Math.Sin(angle);
            }
        return table;
    }

    /// <summary>Rotates every head of q and of k in place (one launch), reading (cos, sin) from <see cref="CosSinTable"/>.</summary>
    /// <param name="q">[tokens, heads*headDim] F32</param>
    /// <param name="k">[tokens, kvHeads*headDim] F32</param>
    /// <param name="positions">[tokens] I32, each below the table's maxPositions</param>
    /// <param name="cosSin">[maxPositions, headDim/2, 2] F32</param>
    /// <param name="headDim">width of one head, positive and even; q's and k's widths are multiples of it</param>
    public void ApplyCached(DeviceTensor q, DeviceTensor k, DeviceTensor positions, DeviceTensor cosSin, int headDim)
    {
        var shape = CheckCached(q, k, positions, cosSin, headDim);
        if (q.Dim(0) == 0) return;
        ApplyCachedCore(q, k, positions, cosSin, shape);
    }

    /// <summary>The argument checks of <see cref="ApplyCached"/> (also the fused rotate-and-write-KV op's), and its shape.</summary>
    internal static RopeShape CheckCached(DeviceTensor q, DeviceTensor k, DeviceTensor positions, DeviceTensor cosSin, int headDim)
    {
        if (headDim <= 0 || headDim % 2 != 0) throw new ArgumentOutOfRangeException(nameof(headDim), headDim, "head_dim must be positive and even");
        Check.DType(q, DType.F32, nameof(q));
        Check.Rank(q, 2, nameof(q));
        int tokens = q.Dim(0);
        Check.DType(k, DType.F32, nameof(k));
        Check.Rank(k, 2, nameof(k));
        if (k.Dim(0) != tokens) throw new ArgumentException($"k has {k.Dim(0)} tokens, q has {tokens}", nameof(k));
        if (q.Dim(1) % headDim != 0) throw new ArgumentException($"q width {q.Dim(1)} is not a multiple of head_dim {headDim}", nameof(q));
        if (k.Dim(1) % headDim != 0) throw new ArgumentException($"k width {k.Dim(1)} is not a multiple of head_dim {headDim}", nameof(k));
        Check.DType(positions, DType.I32, nameof(positions));
        Check.Shape(positions, nameof(positions), tokens);
        Check.DType(cosSin, DType.F32, nameof(cosSin));
        Check.Shape(cosSin, nameof(cosSin), -1, headDim / 2, 2);
        return new RopeShape { QWidth = q.Dim(1), KWidth = k.Dim(1), HeadDim = headDim, MaxPositions = cosSin.Dim(0) };
    }

    /// <summary>The launch of <see cref="ApplyCached"/>, arguments checked.</summary>
    private protected virtual void ApplyCachedCore(DeviceTensor q, DeviceTensor k, DeviceTensor positions, DeviceTensor cosSin, RopeShape shape) =>
        _applyCached(_device.Stream, checked(q.Dim(0) * (shape.QWidth + shape.KWidth) / 2), q.F32, k.F32, positions.I32, cosSin.F32, shape);

    // per head: (x[j], x[j+half]) ← (x[j]·cos − x[j+half]·sin, x[j+half]·cos + x[j]·sin), angle = pos[t]·invFreq[j]
    static void RopeKernel(Index1D i, ArrayView<float> x, ArrayView<int> positions, ArrayView<float> invFreq, int width, int headDim)
    {
        int half = headDim / 2;
        int perToken = width / 2;                 // rotation pairs per token
        int t = i / perToken, r = i % perToken;
        int head = r / half, j = r % half;
        double angle = (double)positions[t] * invFreq[j];
        float c = (float)XMath.Cos(angle), s = (float)XMath.Sin(angle);
        long a = (long)t * width + head * headDim + j, b = a + half;
        float x1 = x[a], x2 = x[b];
        x[a] = x1 * c - x2 * s;
        x[b] = x2 * c + x1 * s;
    }

    /// <summary>Rotates every head of every token in place.</summary>
    /// <param name="x">[tokens, heads*headDim] F32</param>
    /// <param name="positions">[tokens] I32</param>
    /// <param name="invFreq">[headDim/2] F32 (see RopeFrequencies)</param>
    /// <param name="headDim">width of one head, positive and even; x's width is a multiple of it</param>
    public void Apply(DeviceTensor x, DeviceTensor positions, DeviceTensor invFreq, int headDim)
    {
        if (headDim <= 0 || headDim % 2 != 0) throw new ArgumentOutOfRangeException(nameof(headDim), headDim, "head_dim must be positive and even");
        Check.DType(x, DType.F32, nameof(x));
        Check.Rank(x, 2, nameof(x));
        int tokens = x.Dim(0), width = x.Dim(1);
        if (width % headDim != 0) throw new ArgumentException($"x width {width} is not a multiple of head_dim {headDim}", nameof(x));
        Check.DType(positions, DType.I32, nameof(positions));
        Check.Shape(positions, nameof(positions), tokens);
        Check.DType(invFreq, DType.F32, nameof(invFreq));
        Check.Shape(invFreq, nameof(invFreq), headDim / 2);
        if (x.Length == 0) return;
        ApplyCore(x, positions, invFreq, headDim);
    }

    /// <summary>The launch of <see cref="Apply"/>, arguments checked.</summary>
    private protected virtual void ApplyCore(DeviceTensor x, DeviceTensor positions, DeviceTensor invFreq, int headDim) =>
        _apply(_device.Stream, checked(x.Dim(0) * x.Dim(1) / 2), x.F32, positions.I32, invFreq.F32, x.Dim(1), headDim);
}
