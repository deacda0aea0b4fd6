namespace LoraEngine.Tensors.Reference;

/// <summary>Plain double-precision references for ElementwiseOps.</summary>
public static class ElementwiseReference
{
    /// <summary>x[i] + y[i].</summary>
    public static float[] Add(ReadOnlySpan<float> x, ReadOnlySpan<float> y)
    {
        var r = new float[x.Length];
        for (int i = 0; i < x.Length; i++) r[i] = (float)((double)x[i] + y[i]);
        return r;
    }

    /// <summary>silu(gate[i]) * up[i].</summary>
    public static float[] SwiGlu(ReadOnlySpan<float> gate, ReadOnlySpan<float> up)
    {
        var r = new float[gate.Length];
        for (int i = 0; i < gate.Length; i++)
        {
            double g = gate[i];
            r[i] = (float)(g / (1 + Math.Exp(-g)) * up[i]);
        }
        return r;
    }

    /// <summary>out[t,:] = table[ids[t],:], zeros for ids outside [0, vocab).</summary>
    public static float[] Embedding(ReadOnlySpan<int> ids, ReadOnlySpan<float> table, int dim)
    {
        int vocab = table.Length / dim;
        var r = new float[ids.Length * dim];
        for (int t = 0; t < ids.Length; t++)
            if (ids[t] >= 0 && ids[t] < vocab) table.Slice(ids[t] * dim, dim).CopyTo(r.AsSpan(t * dim, dim));
        return r;
    }
}
