namespace LoraEngine.Tensors.Kernels;

/// <summary>The CPU device's RoPE from the (cos, sin) table: the same arithmetic as RopeOps' cached kernel.</summary>
internal static class HostRope
{
    public static void ApplyCached(Span<float> q, Span<float> k, ReadOnlySpan<int> positions, ReadOnlySpan<float> cosSin, RopeOps.RopeShape s)
    {
        int half = s.HeadDim / 2;
        for (int t = 0; t < positions.Length; t++)
        {
            int pos = positions[t];
            if (pos < 0 || pos >= s.MaxPositions) continue;
            var cs = cosSin.Slice(pos * half * 2, half * 2);
            Rotate(q.Slice(t * s.QWidth, s.QWidth), cs, s.HeadDim);
            Rotate(k.Slice(t * s.KWidth, s.KWidth), cs, s.HeadDim);
        }
    }

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
