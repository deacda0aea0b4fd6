namespace LoraEngine.Tensors.Reference;

/// <summary>Plain double-precision reference for MatMulOps.</summary>
public static class MatMulReference
{
    /// <summary>y[t, o] = Σ_i w[o, i] · x[t, i]; x [tokens, in], w [out, in].</summary>
    public static float[] Linear(ReadOnlySpan<float> x, ReadOnlySpan<float> w, int tokens, int inF, int outF)
    {
        var y = new float[tokens * outF];
        for (int t = 0; t < tokens; t++)
            for (int o = 0; o < outF; o++)
            {
                double s = 0;
                for (int i = 0; i < inF; i++) s += (double)w[o * inF + i] * x[t * inF + i];
                y[t * outF + o] = (float)s;
            }
        return y;
    }
}
