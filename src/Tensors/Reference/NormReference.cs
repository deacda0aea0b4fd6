namespace LoraEngine.Tensors.Reference;

/// <summary>Plain double-precision references for NormOps.</summary>
public static class NormReference
{
    /// <summary>y[t,:] = x[t,:] / sqrt(mean(x[t,:]²) + eps) * w[:]; x is [tokens, dim] row-major.</summary>
    public static float[] RmsNorm(ReadOnlySpan<float> x, ReadOnlySpan<float> w, int dim, double eps)
    {
        var y = new float[x.Length];
        for (int t = 0; t < x.Length / dim; t++)
        {
            double ss = 0;
            for (int i = 0; i < dim; i++) ss += (double)x[t * dim + i] * x[t * dim + i];
            double scale = 1.0 / Math.Sqrt(ss / dim + eps);
            for (int i = 0; i < dim; i++) y[t * dim + i] = (float)(x[t * dim + i] * scale * w[i]);
        }
        return y;
    }
}
