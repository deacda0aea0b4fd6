using System.Numerics.Tensors;

namespace LoraEngine.Tensors.Kernels;

/// <summary>The CPU device's KV-cache write and paged attention: TensorPrimitives over contiguous head rows, tokens×heads in parallel.</summary>
internal static unsafe class HostAttention
{
    public static void WriteKv(Span<float> kCache, Span<float> vCache, Span<float> k, Span<float> v, Span<int> slots, int kvWidth, int numSlots)
    {
        for (int t = 0; t < slots.Length; t++)
        {
            int slot = slots[t];
            if (slot < 0 || slot >= numSlots) continue;
            k.Slice(t * kvWidth, kvWidth).CopyTo(kCache.Slice(slot * kvWidth, kvWidth));
            v.Slice(t * kvWidth, kvWidth).CopyTo(vCache.Slice(slot * kvWidth, kvWidth));
        }
    }

    internal static void Attend(Span<float> output, Span<float> q, Span<float> kCache, Span<float> vCache, Span<int> blockTables,
        Span<int> tokenSeq, Span<int> tokenPos, AttentionOps.AttentionShape s)
    {
        fixed (float* outP = output, qP = q, kP = kCache, vP = vCache)
        fixed (int* btP = blockTables, seqP = tokenSeq, posP = tokenPos)
        {
            float* o = outP, qq = qP, kc = kP, vc = vP;
            int* bt = btP, seqs = seqP, poss = posP;
            Parallel.For(0, s.Tokens * s.Heads, () => (new float[0], new float[s.HeadDim]), (w, _, scratch) =>
            {
                int t = w / s.Heads, h = w % s.Heads, kvh = h / (s.Heads / s.KvHeads);
                int seq = seqs[t], pos = poss[t], hd = s.HeadDim;
                var query = new ReadOnlySpan<float>(qq + ((long)t * s.Heads + h) * hd, hd);
                var scores = scratch.Item1.Length > pos ? scratch.Item1 : new float[pos + 1];
                int n = 0;
                var rows = new long[pos + 1];
                for (int p = 0; p <= pos; p++, n++)
                {
                    int logical = p / s.BlockSize;
                    if (logical >= s.MaxBlocks) break;
                    int block = bt[(long)seq * s.MaxBlocks + logical];
                    if (block < 0 || block >= s.NumBlocks) break;
                    rows[p] = (((long)block * s.BlockSize + p % s.BlockSize) * s.KvHeads + kvh) * hd;
                    scores[p] = s.Scale * TensorPrimitives.Dot(query, new ReadOnlySpan<float>(kc + rows[p], hd));
                }
                var result = new Span<float>(o + ((long)t * s.Heads + h) * hd, hd);
                result.Clear();
                if (n > 0)
                {
                    var sc = scores.AsSpan(0, n);
                    TensorPrimitives.SoftMax(sc, sc);
                    for (int p = 0; p < n; p++)
                        TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(vc + rows[p], hd), sc[p], result, result);
                }
                return (scores, scratch.Item2);
            }, _ => { });
        }
    }
}
