namespace LoraEngine.Tensors;

/// <summary>RoPE inverse frequencies as Hugging Face computes them, in double precision.</summary>
public static class RopeFrequencies
{
    /// <summary>
    /// inv_freq[i] = 1 / theta^(2i / headDim) for i &lt; headDim/2; with llama3 scaling, wavelengths longer than
    /// original_max / low_freq_factor are divided by factor, shorter than original_max / high_freq_factor kept,
    /// and the band between interpolated smoothly (transformers' _compute_llama3_parameters).
    /// </summary>
    public static float[] InverseFrequencies(int headDim, double theta, Llama3RopeScaling? scaling)
    {
        if (headDim <= 0 || headDim % 2 != 0) throw new ArgumentOutOfRangeException(nameof(headDim), headDim, "head_dim must be positive and even");
        if (!(theta > 0)) throw new ArgumentOutOfRangeException(nameof(theta), theta, "rope theta must be positive");
        var inv = new float[headDim / 2];
        for (int i = 0; i < inv.Length; i++)
        {
            double f = 1.0 / Math.Pow(theta, 2.0 * i / headDim);
            if (scaling is { } s)
            {
                double lowWavelen = s.OriginalMaxPositionEmbeddings / s.LowFreqFactor;
                double highWavelen = s.OriginalMaxPositionEmbeddings / s.HighFreqFactor;
                double wavelen = 2 * Math.PI / f;
                if (wavelen > lowWavelen) f /= s.Factor;
                else if (wavelen >= highWavelen)
                {
                    double smooth = (s.OriginalMaxPositionEmbeddings / wavelen - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor);
                    f = (1 - smooth) * f / s.Factor + smooth * f;
                }
            }
            inv[i] = (float)f;
        }
        return inv;
    }
}
