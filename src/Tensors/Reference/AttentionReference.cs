namespace LoraEngine.Tensors.Reference;

/// <summary>
/// Plain double-precision causal attention over contiguous per-sequence K/V (no paging), so tests of the paged
/// kernel also check the paging.
/// </summary>
public static class AttentionReference
{
    /// <summary>
    /// out[t, h] = Σ_{p ≤ pos[t]} softmax(scale · q[t,h] · k[seq, p, kvh]) v[seq, p, kvh]; keys[s] and values[s] are
    /// [length, kvHeads*headDim] for sequence s.
    /// </summary>
    public static float[] Attend(ReadOnlySpan<float> q, IReadOnlyList<float[]> keys, IReadOnlyList<float[]> values, ReadOnlySpan<int> tokenSeq,
        ReadOnlySpan<int> tokenPos, int heads, int kvHeads, int headDim, double scale)
    {
        int tokens = tokenSeq.Length, kvWidth = kvHeads * headDim;
        var output = new float[tokens * heads * headDim];
        for (int t = 0; t < tokens; t++)
            for (int h = 0; h < heads; h++)
            {
                int kvh = h / (heads / kvHeads), seq = tokenSeq[t], n = tokenPos[t] + 1;
                var scores = new double[n];
                for (int p = 0; p < n; p++)
                {
                    double dot = 0;
                    for (int d = 0; d < headDim; d++) dot += (double)q[(t * heads + h) * headDim + d] * keys[seq][p * kvWidth + kvh * headDim + d];
                    scores[p] = dot * scale;
                }
                double max = scores.Max(), sum = scores.Sum(s => Math.Exp(s - max));
                for (int d = 0; d < headDim; d++)
                {
                    double acc = 0;
                    for (int p = 0; p < n; p++) acc += Math.Exp(scores[p] - max) / sum * values[seq][p * kvWidth + kvh * headDim + d];
                    output[(t * heads + h) * headDim + d] = (float)acc;
                }
            }
        return output;
    }
}
