using System.Numerics.Tensors;

namespace LoraEngine.Tensors.Kernels;

/// <summary>The CPU device's RMSNorm (and the residual add fused before it): TensorPrimitives, one row at a time.</summary>
internal sealed class HostNorm(ComputeDevice device) : NormOps(device)
{
    private protected override void RmsNormCore(DeviceTensor y, DeviceTensor x, DeviceTensor weight, float eps) =>
        RmsNorm(y.HostSpan<float>(), x.HostSpan<float>(), weight, x.Dim(1), eps);

    private protected override void AddRmsNormCore(DeviceTensor y, DeviceTensor x, DeviceTensor delta, DeviceTensor weight, float eps)
    {
        var xs = x.HostSpan<float>();
        HostElementwise.AddInPlace(xs, delta.HostSpan<float>());
        RmsNorm(y.HostSpan<float>(), xs, weight, x.Dim(1), eps);
    }

    /// <summary>y[t,:] = x[t,:] * rsqrt(mean(x[t,:]²) + eps) * w[:] for every row t.</summary>
    static void RmsNorm(Span<float> y, Span<float> x, DeviceTensor weight, int dim, float eps)
    {
        var w = HostMemory.WeightRow(weight, 0, dim, HostMemory.ScratchRow(dim));
        int tokens = x.Length / dim;
        for (int t = 0; t < tokens; t++)
        {
            var xr = x.Slice(t * dim, dim);
            var yr = y.Slice(t * dim, dim);
            float scale = 1f / MathF.Sqrt(TensorPrimitives.SumOfSquares<float>(xr) / dim + eps);
            TensorPrimitives.Multiply(xr, scale, yr);
            TensorPrimitives.Multiply(yr, w, yr);
        }
    }
}
