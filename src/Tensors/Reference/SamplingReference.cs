namespace LoraEngine.Tensors.Reference;

/// <summary>Plain double-precision references for SamplingOps.</summary>
public static class SamplingReference
{
    /// <summary>y[r, i] = softmax(x[r, :])[i] per row of <paramref name="vocab"/> values, or its log with <paramref name="log"/> (max-subtracted, in double).</summary>
    public static float[] Softmax(ReadOnlySpan<float> x, int vocab, bool log)
    {
        var y = new float[x.Length];
        for (int r = 0; r < x.Length / vocab; r++)
        {
            double max = double.NegativeInfinity;
            for (int i = 0; i < vocab; i++) max = Math.Max(max, x[r * vocab + i]);
            double sum = 0;
            for (int i = 0; i < vocab; i++) sum += Math.Exp(x[r * vocab + i] - max);
            for (int i = 0; i < vocab; i++)
                y[r * vocab + i] = (float)(log ? x[r * vocab + i] - max - Math.Log(sum) : Math.Exp(x[r * vocab + i] - max) / sum);
        }
        return y;
    }

    /// <summary>Indices of the k largest per row, by (value desc, index asc).</summary>
    public static int[] TopK(ReadOnlySpan<float> x, int vocab, int k)
    {
        var result = new int[x.Length / vocab * k];
        var row = new float[vocab];
        for (int r = 0; r < x.Length / vocab; r++)
        {
            x.Slice(r * vocab, vocab).CopyTo(row);
            var order = Enumerable.Range(0, vocab).OrderByDescending(i => row[i]).ThenBy(i => i).Take(k).ToArray();
            order.CopyTo(result, r * k);
        }
        return result;
    }
}
