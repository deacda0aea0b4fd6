using System.Numerics.Tensors;

namespace LoraEngine.Tensors.Kernels;

/// <summary>
/// Vectorised host implementations that the CPU device uses instead of ILGPU's CPU accelerator where they are
/// faster (ComputeDevice.UseHostFastPaths). Same math as the kernels; tests check both against the references.
/// </summary>
internal static class HostKernels
{
    /// <summary>Row <paramref name="row"/> of a float weight tensor as F32 (a copy for F16/BF16).</summary>
    public static ReadOnlySpan<float> WeightRow(DeviceTensor weight, long offset, int length, Span<float> scratch)
    {
        if (weight.DType == DType.F32) return weight.HostSpan<float>().Slice(checked((int)offset), length);
        HalfBits.ToFloat(weight.DType, weight.HostSpan<ushort>().Slice(checked((int)offset), length), scratch[..length]);
        return scratch[..length];
    }

    public static void RmsNorm(Span<float> y, Span<float> x, DeviceTensor weight, int dim, float eps)
    {
        var w = WeightRow(weight, 0, dim, new float[dim]);
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

    public static void AddInPlace(Span<float> x, Span<float> y) => TensorPrimitives.Add(x, y, x);

    public static void SwiGlu(Span<float> output, Span<float> gate, Span<float> up)
    {
        // silu(g) = g * sigmoid(g)
        var tmp = new float[gate.Length];
        TensorPrimitives.Sigmoid(gate, tmp);
        TensorPrimitives.Multiply(tmp, gate, tmp);
        TensorPrimitives.Multiply(tmp, up, output);
    }

    public static void Embedding(Span<float> output, Span<int> ids, DeviceTensor table, int dim, int vocab)
    {
        for (int t = 0; t < ids.Length; t++)
        {
            var dst = output.Slice(t * dim, dim);
            int id = ids[t];
            if (id < 0 || id >= vocab) dst.Clear();
            else WeightRow(table, (long)id * dim, dim, dst).CopyTo(dst);
        }
    }
}
