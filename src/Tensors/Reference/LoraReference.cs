namespace LoraEngine.Tensors.Reference;

/// <summary>Plain double-precision references for LoraOps.</summary>
public static class LoraReference
{
    /// <summary>buffer[t, r] = A[s, r, :] · x[t, :], s = slots[t]; zero for s outside [0, numSlots).</summary>
    public static float[] Shrink(ReadOnlySpan<float> x, ReadOnlySpan<float> a, ReadOnlySpan<int> slots, int numSlots, int rank, int inF)
    {
        var buffer = new float[slots.Length * rank];
        for (int t = 0; t < slots.Length; t++)
        {
            int s = slots[t];
            if (s < 0 || s >= numSlots) continue;
            for (int r = 0; r < rank; r++)
            {
                double sum = 0;
                for (int i = 0; i < inF; i++) sum += (double)a[(s * rank + r) * inF + i] * x[t * inF + i];
                buffer[t * rank + r] = (float)sum;
            }
        }
        return buffer;
    }

    /// <summary>y[t, o] + B[s, o, :] · buffer[t, :], s = slots[t]; y unchanged for s outside [0, numSlots).</summary>
    public static float[] Expand(ReadOnlySpan<float> y, ReadOnlySpan<float> buffer, ReadOnlySpan<float> b, ReadOnlySpan<int> slots, int numSlots, int rank, int outF)
    {
        var result = y.ToArray();
        for (int t = 0; t < slots.Length; t++)
        {
            int s = slots[t];
            if (s < 0 || s >= numSlots) continue;
            for (int o = 0; o < outF; o++)
            {
                double sum = result[t * outF + o];
                for (int r = 0; r < rank; r++) sum += (double)b[(s * outF + o) * rank + r] * buffer[t * rank + r];
                result[t * outF + o] = (float)sum;
            }
        }
        return result;
    }
}
