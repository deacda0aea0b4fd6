using System.Numerics.Tensors;

namespace LoraEngine.Tensors.Kernels;

/// <summary>
/// The CPU device's LoRA shrink and expand (same semantics as LoraOps' kernels). Tokens are grouped by slot so each
/// slot's A and B are decoded to F32 once per call, not once per token.
/// </summary>
internal static class HostLora
{
    public static void Shrink(Span<float> buffer, Span<float> x, DeviceTensor a, Span<int> slots, int numSlots, int rank, int inF)
    {
        buffer.Clear();
        var rows = new float[rank * inF];
        foreach (var (slot, tokens) in BySlot(slots, numSlots))
        {
            for (int r = 0; r < rank; r++) HostKernels.WeightRow(a, ((long)slot * rank + r) * inF, inF, rows.AsSpan(r * inF, inF)).CopyTo(rows.AsSpan(r * inF, inF));
            foreach (int t in tokens)
            {
                var xt = x.Slice(t * inF, inF);
                for (int r = 0; r < rank; r++) buffer[t * rank + r] = TensorPrimitives.Dot(rows.AsSpan(r * inF, inF), xt);
            }
        }
    }

    public static void Expand(Span<float> y, Span<float> buffer, DeviceTensor b, Span<int> slots, int numSlots, int rank, int outF)
    {
        // B[s] is [out, rank]; transposed to [rank, out] so each token's update is rank vectorised multiply-adds over out.
        var bt = new float[rank * outF];
        var row = new float[rank];
        foreach (var (slot, tokens) in BySlot(slots, numSlots))
        {
            for (int o = 0; o < outF; o++)
            {
                var src = HostKernels.WeightRow(b, ((long)slot * outF + o) * rank, rank, row);
                for (int r = 0; r < rank; r++) bt[r * outF + o] = src[r];
            }
            foreach (int t in tokens)
            {
                var yt = y.Slice(t * outF, outF);
                for (int r = 0; r < rank; r++) TensorPrimitives.MultiplyAdd(bt.AsSpan(r * outF, outF), buffer[t * rank + r], yt, yt);
            }
        }
    }

    /// <summary>Token indices per valid slot (slots −1 or out of range are skipped).</summary>
    static IEnumerable<(int Slot, List<int> Tokens)> BySlot(Span<int> slots, int numSlots)
    {
        var groups = new SortedDictionary<int, List<int>>();
        for (int t = 0; t < slots.Length; t++)
        {
            int s = slots[t];
            if (s < 0 || s >= numSlots) continue;
            if (!groups.TryGetValue(s, out var list)) groups[s] = list = new List<int>();
            list.Add(t);
        }
        return groups.Select(g => (g.Key, g.Value));
    }
}
