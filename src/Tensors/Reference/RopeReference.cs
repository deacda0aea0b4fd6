namespace LoraEngine.Tensors.Reference;

/// <summary>Plain double-precision reference for RopeOps (rotate-half layout).</summary>
public static class RopeReference
{
    /// <summary>Rotates x [tokens, heads*headDim] by position: (x1, x2) → (x1 cos − x2 sin, x2 cos + x1 sin).</summary>
    public static float[] Apply(ReadOnlySpan<float> x, ReadOnlySpan<int> positions, ReadOnlySpan<float> invFreq, int width, int headDim)
    {
        var y = x.ToArray();
        int half = headDim / 2;
        for (int t = 0; t < positions.Length; t++)
            for (int h = 0; h < width / headDim; h++)
                for (int j = 0; j < half; j++)
                {
                    double angle = (double)positions[t] * invFreq[j];
                    int a = t * width + h * headDim + j, b = a + half;
                    double x1 = x[a], x2 = x[b];
                    y[a] = (float)(x1 * Math.Cos(angle) - x2 * Math.Sin(angle));
                    y[b] = (float)(x2 * Math.Cos(angle) + x1 * Math.Sin(angle));
                }
        return y;
    }
}
