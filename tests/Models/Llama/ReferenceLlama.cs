namespace LoraEngine.Models.Tests.Llama;

/// <summary>
/// A plain double-precision Llama forward over one sequence, written for the tests from the HF modeling code:
/// no cache, no paging, no kernels. Weights by HF name as float arrays.
/// </summary>
internal static class ReferenceLlama
{
    public static double[][] Logits(LlamaConfig c, IReadOnlyDictionary<string, float[]> w, int[] ids)
    {
        int T = ids.Length, H = c.HiddenSize, hd = c.HeadDim, nh = c.NumAttentionHeads, nkv = c.NumKeyValueHeads;
        var invFreq = InverseFrequencies(c);
        var x = new double[T][];
        for (int t = 0; t < T; t++) x[t] = Row(w["model.embed_tokens.weight"], ids[t], H);

        for (int l = 0; l < c.NumHiddenLayers; l++)
        {
            string p = $"model.layers.{l}.";
            var h = x.Select(r => RmsNorm(r, w[p + "input_layernorm.weight"], c.RmsNormEps)).ToArray();
            var q = h.Select(r => MatVec(w[p + "self_attn.q_proj.weight"], r, nh * hd)).ToArray();
            var k = h.Select(r => MatVec(w[p + "self_attn.k_proj.weight"], r, nkv * hd)).ToArray();
            var v = h.Select(r => MatVec(w[p + "self_attn.v_proj.weight"], r, nkv * hd)).ToArray();
            for (int t = 0; t < T; t++)
            {
                Rope(q[t], nh, hd, t, invFreq);
                Rope(k[t], nkv, hd, t, invFreq);
            }
            var attn = new double[T][];
            for (int t = 0; t < T; t++)
            {
                attn[t] = new double[nh * hd];
                for (int head = 0; head < nh; head++)
                {
                    int kvh = head / (nh / nkv);
                    var scores = new double[t + 1];
                    for (int s = 0; s <= t; s++)
                    {
                        double dot = 0;
                        for (int d = 0; d < hd; d++) dot += q[t][head * hd + d] * k[s][kvh * hd + d];
                        scores[s] = dot / Math.Sqrt(hd);
                    }
                    double max = scores.Max(), sum = scores.Sum(v2 => Math.Exp(v2 - max));
                    for (int s = 0; s <= t; s++)
                    {
                        double pr = Math.Exp(scores[s] - max) / sum;
                        for (int d = 0; d < hd; d++) attn[t][head * hd + d] += pr * v[s][kvh * hd + d];
                    }
                }
            }
            for (int t = 0; t < T; t++)
            {
                var o = MatVec(w[p + "self_attn.o_proj.weight"], attn[t], H);
                for (int i = 0; i < H; i++) x[t][i] += o[i];
                var hn = RmsNorm(x[t], w[p + "post_attention_layernorm.weight"], c.RmsNormEps);
                var gate = MatVec(w[p + "mlp.gate_proj.weight"], hn, c.IntermediateSize);
                var up = MatVec(w[p + "mlp.up_proj.weight"], hn, c.IntermediateSize);
                for (int i = 0; i < gate.Length; i++) gate[i] = gate[i] / (1 + Math.Exp(-gate[i])) * up[i];
                var down = MatVec(w[p + "mlp.down_proj.weight"], gate, H);
                for (int i = 0; i < H; i++) x[t][i] += down[i];
            }
        }
        var head2 = c.TieWordEmbeddings ? w["model.embed_tokens.weight"] : w["lm_head.weight"];
        return x.Select(r => MatVec(head2, RmsNorm(r, w["model.norm.weight"], c.RmsNormEps), c.VocabSize)).ToArray();
    }

    static double[] Row(float[] table, int row, int dim) => table.Skip(row * dim).Take(dim).Select(f => (double)f).ToArray();

    static double[] RmsNorm(double[] x, float[] w, double eps)
    {
        double ms = x.Sum(v => v * v) / x.Length;
        double scale = 1 / Math.Sqrt(ms + eps);
        return x.Select((v, i) => v * scale * w[i]).ToArray();
    }

    // y = W x, W [out, in]
    static double[] MatVec(float[] wt, double[] x, int outF)
    {
        var y = new double[outF];
        for (int o = 0; o < outF; o++)
        {
            double s = 0;
            for (int i = 0; i < x.Length; i++) s += wt[o * x.Length + i] * x[i];
            y[o] = s;
        }
        return y;
    }

    // rotate-half RoPE, in place over each head
    static void Rope(double[] v, int heads, int hd, int pos, double[] invFreq)
    {
        int half = hd / 2;
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < half; i++)
            {
                double a = pos * invFreq[i], c = Math.Cos(a), s = Math.Sin(a);
                double x1 = v[h * hd + i], x2 = v[h * hd + i + half];
                v[h * hd + i] = x1 * c - x2 * s;
                v[h * hd + i + half] = x2 * c + x1 * s;
            }
    }

    /// <summary>HF's default and llama3 inverse frequencies, written out independently of the product's code.</summary>
    public static double[] InverseFrequencies(LlamaConfig c)
    {
        int hd = c.HeadDim;
        var inv = Enumerable.Range(0, hd / 2).Select(i => 1.0 / Math.Pow(c.RopeTheta, 2.0 * i / hd)).ToArray();
        if (c.RopeScaling is not { } s) return inv;
        double lowWavelen = s.OriginalMaxPositionEmbeddings / s.LowFreqFactor;
        double highWavelen = s.OriginalMaxPositionEmbeddings / s.HighFreqFactor;
        return inv.Select(f =>
        {
            double wavelen = 2 * Math.PI / f;
            if (wavelen < highWavelen) return f;
            if (wavelen > lowWavelen) return f / s.Factor;
            double smooth = (s.OriginalMaxPositionEmbeddings / wavelen - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor);
            return (1 - smooth) * f / s.Factor + smooth * f;
        }).ToArray();
    }
}
