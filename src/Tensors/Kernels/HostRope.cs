namespace LoraEngine.Tensors.Kernels;

/// <summary>The CPU device's RoPE: the same arithmetic as <see cref="RopeOps"/>' kernels, one token at a time.</summary>
internal sealed class HostRope(ComputeDevice device) : RopeOps(device)
{
    private protected override void ApplyCachedCore(DeviceTensor q, DeviceTensor k, DeviceTensor positions, DeviceTensor cosSin, RopeShape s)
    {
        var qs = q.HostSpan<float>();
        var ks = k.HostSpan<float>();
        var pos = positions.HostSpan<int>();
        var table = cosSin.HostSpan<float>();
        int half = s.HeadDim / 2;
        for (int t = 0; t < pos.Length; t++)
        {
            int p = pos[t];
            if (p < 0 || p >= s.MaxPositions) continue;
            var cs = table.Slice(p * half * 2, half * 2);
            Rotate(qs.Slice(t * s.QWidth, s.QWidth), cs, s.HeadDim);
            Rotate(ks.Slice(t * s.KWidth, s.KWidth), cs, s.HeadDim);
        }
    }

    /// <summary>(cos, sin) of pos·invFreq[j] computed per token in double precision, as the kernel does.</summary>
    private protected override void ApplyCore(DeviceTensor x, DeviceTensor positions, DeviceTensor invFreq, int headDim)
    {
        var xs = x.HostSpan<float>();
        var pos = positions.HostSpan<int>();
        var inv = invFreq.HostSpan<float>();
        int width = x.Dim(1), half = headDim / 2;
        Span<float> cs = stackalloc float[headDim];
        for (int t = 0; t < pos.Length; t++)
        {
            for (int j = 0; j < half; j++)
            {
                double angle = (double)pos[t] * inv[j];
                cs[2 * j] = (float)Math.Cos(angle);
                cs[2 * j + 1] = (float)Math.Sin(angle);
            }
            Rotate(xs.Slice(t * width, width), cs, headDim);
        }
    }

    /// <summary>Every head of one token's row: (v[j], v[j+half]) ← (v[j]·cos − v[j+half]·sin, v[j+half]·cos + v[j]·sin), cs = (cos, sin) pairs.</summary>
    static void Rotate(Span<float> row, ReadOnlySpan<float> cs, int headDim)
    {
        int half = headDim / 2;
        for (int h = 0; h < row.Length; h += headDim)
        {
            var v = row.Slice(h, headDim);
            for (int j = 0; j < half; j++)
            {
                float c = cs[2 * j], sn = cs[2 * j + 1], x1 = v[j], x2 = v[j + half];
                v[j] = x1 * c - x2 * sn;
                v[j + half] = x2 * c + x1 * sn;
            }
        }
    }
}
