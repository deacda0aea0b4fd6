using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace LoraEngine.Tensors.Kernels;

/// <summary>Rotary position embedding in Hugging Face Llama's rotate-half layout.</summary>
public sealed class RopeOps
{
    readonly ComputeDevice _device;
    readonly Action<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int> _apply;

    internal RopeOps(ComputeDevice device)
    {
        _device = device;
        _apply = device.Accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int>(RopeKernel);
    }

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
        if (_device.UseHostFastPaths && _device.IsCpu)
        {
            HostKernels.Rope(x.HostSpan<float>(), positions.HostSpan<int>(), invFreq.HostSpan<float>(), width, headDim);
            return;
        }
        _apply(checked(tokens * width / 2), x.F32, positions.I32, invFreq.F32, width, headDim);
    }
}
