using System.Numerics.Tensors;

namespace LoraEngine.Tensors.Kernels;

/// <summary>The CPU device's LoRA shrink and expand (same semantics as LoraOps' kernels).</summary>
internal static class HostLora
{
    public static void Shrink(Span<float> buffer, Span<float> x, DeviceTensor a, Span<int> slots, int numSlots, int rank, int inF)
    {
        var row = new float[inF];
        for (int t = 0; t < slots.Length; t++)
        {
            var dst = buffer.Slice(t * rank, rank);
            int s = slots[t];
            if (s < 0 || s >= numSlots)
            {
                dst.Clear();
                continue;
            }
            var xt = x.Slice(t * inF, inF);
            for (int r = 0; r < rank; r++)
                dst[r] = TensorPrimitives.Dot(HostKernels.WeightRow(a, ((long)s * rank + r) * inF, inF, row), xt);
        }
    }

    public static void Expand(Span<float> y, Span<float> buffer, DeviceTensor b, Span<int> slots, int numSlots, int rank, int outF)
    {
        var row = new float[rank];
        for (int t = 0; t < slots.Length; t++)
        {
            int s = slots[t];
            if (s < 0 || s >= numSlots) continue;
            var bt = buffer.Slice(t * rank, rank);
            for (int o = 0; o < outF; o++)
                y[t * outF + o] += TensorPrimitives.Dot(HostKernels.WeightRow(b, ((long)s * outF + o) * rank, rank, row), bt);
        }
    }
}
