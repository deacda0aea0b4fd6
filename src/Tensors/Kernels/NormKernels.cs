using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Algorithms.ScanReduceOperations;
using ILGPU.Runtime;

namespace LoraEngine.Tensors.Kernels;

/// <summary>RMSNorm as Llama applies it, one group per row.</summary>
public sealed class NormOps
{
    const int GroupSize = 256;

    readonly ComputeDevice _device;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float> _rmsF32;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, int, float> _rmsBf16;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<ILGPU.Half>, int, float> _rmsF16;

    internal NormOps(ComputeDevice device)
    {
        _device = device;
        var acc = device.Accelerator;
        _rmsF32 = acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float>(RmsNormKernel<float, F32Decoder>);
        _rmsBf16 = acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<ushort>, int, float>(RmsNormKernel<ushort, Bf16Decoder>);
        _rmsF16 = acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<ILGPU.Half>, int, float>(RmsNormKernel<ILGPU.Half, F16Decoder>);
    }

    // y[t,:] = x[t,:] * rsqrt(mean(x[t,:]²) + eps) * w[:]     (one group per row t)
    static void RmsNormKernel<TW, TDec>(ArrayView<float> y, ArrayView<float> x, ArrayView<TW> w, int dim, float eps)
        where TW : unmanaged where TDec : struct, IWeightDecoder<TW>
    {
        long row = (long)Grid.IdxX * dim;
        float sum = 0f;
        for (int i = Group.IdxX; i < dim; i += Group.DimX)
        {
            float v = x[row + i];
            sum += v * v;
        }
        float total = GroupExtensions.AllReduce<float, AddFloat>(sum);
        float scale = XMath.Rsqrt(total / dim + eps);
        TDec dec = default;
        for (int i = Group.IdxX; i < dim; i += Group.DimX)
            y[row + i] = x[row + i] * scale * dec.Decode(w[i]);
    }

    /// <summary>RMSNorm of each row: y[t,:] = x[t,:] * rsqrt(mean(x[t,:]²) + eps) * weight[:].</summary>
    /// <param name="y">[tokens, dim] F32 output (may be <paramref name="x"/>)</param>
    /// <param name="x">[tokens, dim] F32</param>
    /// <param name="weight">[dim] F32, F16 or BF16</param>
    public void RmsNorm(DeviceTensor y, DeviceTensor x, DeviceTensor weight, float eps)
    {
        Check.DType(x, DType.F32, nameof(x));
        Check.Rank(x, 2, nameof(x));
        int tokens = x.Dim(0), dim = x.Dim(1);
        Check.DType(y, DType.F32, nameof(y));
        Check.Shape(y, nameof(y), tokens, dim);
        Check.FloatWeight(weight, nameof(weight));
        Check.Shape(weight, nameof(weight), dim);
        if (!(eps > 0) || float.IsInfinity(eps)) throw new ArgumentOutOfRangeException(nameof(eps), eps, "eps must be positive and finite");
        if (tokens == 0 || dim == 0) return;

        if (_device.UseHostFastPaths && _device.IsCpu)
        {
            HostKernels.RmsNorm(y.HostSpan<float>(), x.HostSpan<float>(), weight, dim, eps);
            return;
        }
        var config = new KernelConfig(tokens, Math.Min(GroupSize, RoundUpToWarp(dim)));
        switch (weight.DType)
        {
            case DType.F32: _rmsF32(config, y.F32, x.F32, weight.F32, dim, eps); break;
            case DType.BF16: _rmsBf16(config, y.F32, x.F32, weight.U16, dim, eps); break;
            default: _rmsF16(config, y.F32, x.F32, weight.AsHalf(), dim, eps); break;
        }
    }

    internal static int RoundUpToWarp(int n) => (n + 31) / 32 * 32;
}
