using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace LoraEngine.Tensors.Kernels;

/// <summary>
/// The CPU device's KV-cache write and paged attention. Attention runs one work item per (token, KV head) on the
/// core team: the query heads that share the KV head read each cached key and value row once, scores are Vector512
/// dot products, a softmax per head, then the weighted value rows are accumulated into the output.
/// </summary>
internal sealed unsafe class HostAttention(ComputeDevice device) : AttentionOps(device, workspaceFloats: 0)
{
    /// <summary>kCache[slot[t]] = k[t], vCache[slot[t]] = v[t]; slot −1 (or outside the cache) skipped.</summary>
    private protected override void WriteKvCore(DeviceTensor kCacheT, DeviceTensor vCacheT, DeviceTensor kt, DeviceTensor vt, DeviceTensor slotMapping)
    {
        Span<float> kCache = kCacheT.HostSpan<float>(), vCache = vCacheT.HostSpan<float>(), k = kt.HostSpan<float>(), v = vt.HostSpan<float>();
        Span<int> slots = slotMapping.HostSpan<int>();
        int kvWidth = kCacheT.Dim(2) * kCacheT.Dim(3), numSlots = kCacheT.Dim(0) * kCacheT.Dim(1);
        for (int t = 0; t < slots.Length; t++)
        {
            int slot = slots[t];
            if (slot < 0 || slot >= numSlots) continue;
            k.Slice(t * kvWidth, kvWidth).CopyTo(kCache.Slice(slot * kvWidth, kvWidth));
            v.Slice(t * kvWidth, kvWidth).CopyTo(vCache.Slice(slot * kvWidth, kvWidth));
        }
    }

    /// <summary>The host RoPE, then the host KV-cache write (one launch on a GPU; two loops here, nothing to fuse).</summary>
    private protected override void RotateAndWriteKvCore(DeviceTensor q, DeviceTensor k, DeviceTensor v, DeviceTensor positions, DeviceTensor cosSin,
        RopeOps.RopeShape shape, DeviceTensor kCache, DeviceTensor vCache, DeviceTensor slotMapping)
    {
        q.Device.Rope.ApplyCached(q, k, positions, cosSin, shape.HeadDim);
        WriteKvCore(kCache, vCache, k, v, slotMapping);
    }

    /// <summary>out[t, h] = Σ_{p ≤ pos[t]} softmax_p(scale · q[t, h] · K[p, kvh]) · V[p, kvh], K/V rows found through the block table.</summary>
    private protected override void PagedAttentionCore(DeviceTensor output, DeviceTensor q, DeviceTensor kCache, DeviceTensor vCache,
        DeviceTensor blockTables, DeviceTensor tokenSeq, DeviceTensor tokenPos, AttentionShape s)
    {
        fixed (float* outP = output.HostSpan<float>(), qP = q.HostSpan<float>(), kP = kCache.HostSpan<float>(), vP = vCache.HostSpan<float>())
        fixed (int* btP = blockTables.HostSpan<int>(), seqP = tokenSeq.HostSpan<int>(), posP = tokenPos.HostSpan<int>())
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
        public AttentionShape Shape;

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
            float* firstQ = Q + ((long)t * s.Heads + kvh * group) * hd;
            if (Vector512.IsHardwareAccelerated && hd % 16 == 0)
            {
                fixed (float* scores = t_scores)
                fixed (long* rowsP = rows)
                    for (int h0 = 0; h0 < group; h0 += 4)
                        FourHeads(firstQ + h0 * hd, firstOut + h0 * hd, Math.Min(4, group - h0), rowsP, n, hd, s.Scale, scores);
                return;
            }
            fixed (float* scores = t_scores)
            {
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

        /// <summary>
        /// Up to four query heads that share a KV head (head_dim a multiple of 16): scores of 4 positions × 4 heads at a
        /// time as 16 register accumulators reduced together, a softmax per head, then the value rows weighted into the
        /// heads' outputs two 16-wide column blocks at a time (a value block is loaded once for the four heads).
        /// </summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        void FourHeads(float* q, float* output, int heads, long* rows, int n, int hd, float scale, float* scores)
        {
            // Missing heads repeat the first one; their results are not stored.
            float* q0 = q, q1 = heads > 1 ? q + hd : q, q2 = heads > 2 ? q + 2 * hd : q, q3 = heads > 3 ? q + 3 * hd : q;
            var acc = stackalloc Vector512<float>[16];
            var lanes = stackalloc Vector512<float>*[16];
            for (int i = 0; i < 16; i++) lanes[i] = acc + i; // lane 4h + j: head h, position j of the group of four
            var sums = stackalloc float[16];
            for (int p = 0; p < n; p += 4)
            {
                // Positions past n repeat the last one; their scores are not stored.
                float* k0 = KeyRow(rows, p, n), k1 = KeyRow(rows, p + 1, n), k2 = KeyRow(rows, p + 2, n), k3 = KeyRow(rows, p + 3, n);
                Vector512<float> a00 = default, a01 = default, a02 = default, a03 = default, a10 = default, a11 = default, a12 = default, a13 = default;
                Vector512<float> a20 = default, a21 = default, a22 = default, a23 = default, a30 = default, a31 = default, a32 = default, a33 = default;
                for (int d = 0; d < hd; d += 16)
                {
                    var v0 = Vector512.Load(k0 + d);
                    var v1 = Vector512.Load(k1 + d);
                    var v2 = Vector512.Load(k2 + d);
                    var v3 = Vector512.Load(k3 + d);
                    var qv = Vector512.Load(q0 + d);
                    a00 = Vector512.FusedMultiplyAdd(qv, v0, a00); a01 = Vector512.FusedMultiplyAdd(qv, v1, a01);
                    a02 = Vector512.FusedMultiplyAdd(qv, v2, a02); a03 = Vector512.FusedMultiplyAdd(qv, v3, a03);
                    qv = Vector512.Load(q1 + d);
                    a10 = Vector512.FusedMultiplyAdd(qv, v0, a10); a11 = Vector512.FusedMultiplyAdd(qv, v1, a11);
                    a12 = Vector512.FusedMultiplyAdd(qv, v2, a12); a13 = Vector512.FusedMultiplyAdd(qv, v3, a13);
                    qv = Vector512.Load(q2 + d);
                    a20 = Vector512.FusedMultiplyAdd(qv, v0, a20); a21 = Vector512.FusedMultiplyAdd(qv, v1, a21);
                    a22 = Vector512.FusedMultiplyAdd(qv, v2, a22); a23 = Vector512.FusedMultiplyAdd(qv, v3, a23);
                    qv = Vector512.Load(q3 + d);
                    a30 = Vector512.FusedMultiplyAdd(qv, v0, a30); a31 = Vector512.FusedMultiplyAdd(qv, v1, a31);
                    a32 = Vector512.FusedMultiplyAdd(qv, v2, a32); a33 = Vector512.FusedMultiplyAdd(qv, v3, a33);
                }
                acc[0] = a00; acc[1] = a01; acc[2] = a02; acc[3] = a03; acc[4] = a10; acc[5] = a11; acc[6] = a12; acc[7] = a13;
                acc[8] = a20; acc[9] = a21; acc[10] = a22; acc[11] = a23; acc[12] = a30; acc[13] = a31; acc[14] = a32; acc[15] = a33;
                (HostDot.Reduce16(lanes) * scale).Store(sums);
                int valid = Math.Min(4, n - p);
                for (int h = 0; h < heads; h++)
                    for (int j = 0; j < valid; j++) scores[h * n + p + j] = sums[4 * h + j];
            }
            for (int h = 0; h < heads; h++)
            {
                var sc = new Span<float>(scores + h * n, n);
                TensorPrimitives.SoftMax(sc, sc);
            }
            float* w0 = scores, w1 = heads > 1 ? scores + n : scores, w2 = heads > 2 ? scores + 2 * n : scores, w3 = heads > 3 ? scores + 3 * n : scores;
            for (int d = 0; d < hd; d += 32)
            {
                // Columns d..d+32 (or the last 16) of the four outputs.
                bool two = d + 16 < hd;
                Vector512<float> o00 = default, o01 = default, o10 = default, o11 = default, o20 = default, o21 = default, o30 = default, o31 = default;
                for (int p = 0; p < n; p++)
                {
                    float* value = V + rows[p] + d;
                    var v0 = Vector512.Load(value);
                    var v1 = two ? Vector512.Load(value + 16) : default;
                    var w = Vector512.Create(w0[p]);
                    o00 = Vector512.FusedMultiplyAdd(v0, w, o00); o01 = Vector512.FusedMultiplyAdd(v1, w, o01);
                    w = Vector512.Create(w1[p]);
                    o10 = Vector512.FusedMultiplyAdd(v0, w, o10); o11 = Vector512.FusedMultiplyAdd(v1, w, o11);
                    w = Vector512.Create(w2[p]);
                    o20 = Vector512.FusedMultiplyAdd(v0, w, o20); o21 = Vector512.FusedMultiplyAdd(v1, w, o21);
                    w = Vector512.Create(w3[p]);
                    o30 = Vector512.FusedMultiplyAdd(v0, w, o30); o31 = Vector512.FusedMultiplyAdd(v1, w, o31);
                }
                StoreColumns(output + d, two, o00, o01);
                if (heads > 1) StoreColumns(output + hd + d, two, o10, o11);
                if (heads > 2) StoreColumns(output + 2 * hd + d, two, o20, o21);
                if (heads > 3) StoreColumns(output + 3 * hd + d, two, o30, o31);
            }
        }

        float* KeyRow(long* rows, int p, int n) => K + rows[Math.Min(p, n - 1)];

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        static void StoreColumns(float* dst, bool two, Vector512<float> a, Vector512<float> b)
        {
            a.Store(dst);
            if (two) b.Store(dst + 16);
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
