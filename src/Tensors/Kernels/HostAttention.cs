using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace LoraEngine.Tensors.Kernels;

/// <summary>
/// The CPU device's KV-cache write and paged attention. Attention runs one work item per (token, KV head) on the
/// core team: the query heads that share the KV head read each cached key and value row once, scores are Vector512
/// dot products, a softmax per head, then the weighted value rows are accumulated into the output.
/// </summary>
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

    /// <summary>out[t, h] = Σ_{p ≤ pos[t]} softmax_p(scale · q[t, h] · K[p, kvh]) · V[p, kvh], K/V rows found through the block table.</summary>
    internal static void Attend(Span<float> output, Span<float> q, Span<float> kCache, Span<float> vCache, Span<int> blockTables,
        Span<int> tokenSeq, Span<int> tokenPos, AttentionOps.AttentionShape s)
    {
        fixed (float* outP = output, qP = q, kP = kCache, vP = vCache)
        fixed (int* btP = blockTables, seqP = tokenSeq, posP = tokenPos)
        {
            var job = AttendJob.ForThisThread;
            job.Output = outP;
            job.Q = qP;
            job.K = kP;
            job.V = vP;
            job.BlockTables = btP;
            job.TokenSeq = seqP;
            job.TokenPos = posP;
            job.Shape = s;
            HostParallel.For(s.Tokens * s.KvHeads, job);
        }
    }

    sealed class AttendJob : HostJob
    {
        [ThreadStatic] static AttendJob? t_job;
        [ThreadStatic] static long[]? t_rows;
        [ThreadStatic] static float[]? t_scores;

        public static AttendJob ForThisThread => t_job ??= new AttendJob();

        public float* Output, Q, K, V;
        public int* BlockTables, TokenSeq, TokenPos;
        public AttentionOps.AttentionShape Shape;

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public override void Run(int item)
        {
            var s = Shape;
            int t = item / s.KvHeads, kvh = item % s.KvHeads, group = s.Heads / s.KvHeads, hd = s.HeadDim;
            int seq = TokenSeq[t], pos = TokenPos[t];

            // Cached rows of positions 0..pos, up to the first position without a valid block.
            if (t_rows == null || t_rows.Length < pos + 1) t_rows = new long[Math.Max(pos + 1, 256)];
            var rows = t_rows;
            int n = 0;
            for (; n <= pos; n++)
            {
                int logical = n / s.BlockSize;
                if (logical >= s.MaxBlocks) break;
                int block = BlockTables[(long)seq * s.MaxBlocks + logical];
                if (block < 0 || block >= s.NumBlocks) break;
                rows[n] = (((long)block * s.BlockSize + n % s.BlockSize) * s.KvHeads + kvh) * hd;
            }

            float* firstOut = Output + ((long)t * s.Heads + kvh * group) * hd;
            new Span<float>(firstOut, group * hd).Clear();
            if (n == 0) return;
            if (t_scores == null || t_scores.Length < group * n) t_scores = new float[Math.Max(group * n, 1024)];
            fixed (float* scores = t_scores)
            {
                float* firstQ = Q + ((long)t * s.Heads + kvh * group) * hd;
                for (int p = 0; p < n; p++)
                {
                    float* key = K + rows[p];
                    for (int g = 0; g < group; g++) scores[g * n + p] = s.Scale * Dot(firstQ + g * hd, key, hd);
                }
                for (int g = 0; g < group; g++)
                {
                    var sc = new Span<float>(scores + g * n, n);
                    TensorPrimitives.SoftMax(sc, sc);
                }
                for (int p = 0; p < n; p++)
                {
                    float* value = V + rows[p];
                    for (int g = 0; g < group; g++) MultiplyAdd(firstOut + g * hd, value, scores[g * n + p], hd);
                }
            }
        }

        /// <summary>Σ a[i]·b[i]: one 16-lane accumulator (lanes summed by HostDot.Reduce), then the tail.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        static float Dot(float* a, float* b, int n)
        {
            if (!Vector512.IsHardwareAccelerated) return TensorPrimitives.Dot(new ReadOnlySpan<float>(a, n), new ReadOnlySpan<float>(b, n));
            int i = 0;
            float sum = 0;
            if (n >= 16)
            {
                var acc = Vector512<float>.Zero;
                for (; i <= n - 16; i += 16) acc = Vector512.FusedMultiplyAdd(Vector512.Load(a + i), Vector512.Load(b + i), acc);
                sum = HostDot.Reduce(acc);
            }
            for (; i < n; i++) sum = MathF.FusedMultiplyAdd(a[i], b[i], sum);
            return sum;
        }

        /// <summary>y[i] += w · v[i].</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        static void MultiplyAdd(float* y, float* v, float w, int n)
        {
            if (!Vector512.IsHardwareAccelerated)
            {
                var ys = new Span<float>(y, n);
                TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(v, n), w, ys, ys);
                return;
            }
            int i = 0;
            var wv = Vector512.Create(w);
            for (; i <= n - 16; i += 16) Vector512.FusedMultiplyAdd(Vector512.Load(v + i), wv, Vector512.Load(y + i)).Store(y + i);
            for (; i < n; i++) y[i] = MathF.FusedMultiplyAdd(v[i], w, y[i]);
        }
    }
}
