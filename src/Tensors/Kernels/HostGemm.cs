using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace LoraEngine.Tensors.Kernels;

/// <summary>
/// The CPU device's linear for AVX-512 machines: y[t, o] = Σ_k W[o, k] · x[t, k] (or y[t, o] += …), W stored [out, in]
/// in F32, BF16 or F16.
///
/// Every output is one dot product in a fixed order, whatever the number of tokens (so a token's row is bit-identical
/// alone or in any batch): a 16-lane accumulator takes W[o, k..k+16] · x[t, k..k+16] for k = 0, 16, … in order, its
/// lanes are summed by <see cref="HostDot.Reduce"/>, then the last in % 16 terms are added one by one with FMA.
///
/// The work is cut into chunks of output rows spread over the cores (<see cref="HostParallel"/>). Inside a chunk a
/// register tile of 4 rows × up to 6 tokens keeps 24 accumulators, so each weight vector is loaded once per 6 tokens
/// and each token vector once per 4 rows. Up to <see cref="MaxStreamTokens"/> tokens (decode) read BF16 weights
/// straight from memory, widening them in registers: the weights stream once. Larger batches (prefill) first convert a
/// chunk's rows to an F32 panel (once per step) that all token tiles then reuse from cache.
/// </summary>
internal static unsafe class HostGemm
{
    /// <summary>Tokens up to which BF16 and F32 weights are read in place (one token tile: every weight read once).</summary>
    public const int MaxStreamTokens = TileTokens;

    const int TileRows = 4;
    const int TileTokens = 6;
    const int StreamChunkRows = 16; // rows per parallel work item when streaming weights
    const int PanelRows = 16;       // rows per work item for more than one token tile
    const int KBlock = 512;         // k-block of a panel: 16 rows × 512 × 4 B = 32 KB stays in L1 with a 12 KB token tile
    const int GroupTokens = 22 * TileTokens; // tokens sharing one conversion of a panel (accumulators: 16 × 132 × 64 B in L2)

    /// <summary>Whether this machine runs these kernels (AVX-512); otherwise callers use a portable path.</summary>
    public static bool IsSupported => Vector512.IsHardwareAccelerated && Avx512F.IsSupported;

    /// <summary>
    /// y[i·yStride + o] (+)= Σ_k W[o, k] · x[i·xStride + k] for o &lt; outF and i &lt; tokens, where row i is
    /// tokenRows[i] when given (LoRA gathers a slot's tokens), else i.
    /// </summary>
    /// <param name="w">W [out, in]: element o·wStride + k (F32 floats, or BF16/F16 bits)</param>
    public static void Linear(float* y, long yStride, float* x, long xStride, int* tokenRows, int tokens,
        void* w, DType wType, long wStride, int outF, int inF, bool accumulate)
    {
        if (tokens <= 0 || outF <= 0) return;
        var job = LinearJob.ForThisThread;
        job.Y = y;
        job.YStride = yStride;
        job.X = x;
        job.XStride = xStride;
        job.TokenRows = tokenRows;
        job.Tokens = tokens;
        job.W = (byte*)w;
        job.WType = wType;
        job.WStride = wStride;
        job.OutF = outF;
        job.InF = inF;
        job.Accumulate = accumulate;
        job.ChunkRows = tokens > TileTokens ? PanelRows : StreamChunkRows;
        job.RowChunks = (outF + job.ChunkRows - 1) / job.ChunkRows;
        // Too few row chunks to keep the cores busy (LoRA shrink: rank rows) and many tokens: split the tokens too.
        job.SliceTokens = job.RowChunks < 4 * HostParallel.Threads ? 4 * TileTokens : tokens;
        int items = job.RowChunks * ((tokens + job.SliceTokens - 1) / job.SliceTokens);
        // Small products (LoRA shrink at decode) are not worth a trip to the other core.
        if ((long)outF * inF * tokens < 1 << 16) for (int i = 0; i < items; i++) job.Run(i);
        else HostParallel.For(items, job);
    }

    sealed class LinearJob : HostJob
    {
        [ThreadStatic] static LinearJob? t_job;

        public static LinearJob ForThisThread => t_job ??= new LinearJob();

        public float* Y, X;
        public long YStride, XStride, WStride;
        public int* TokenRows;
        public int Tokens, OutF, InF, ChunkRows, RowChunks, SliceTokens;
        public byte* W;
        public DType WType;
        public bool Accumulate;

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public override void Run(int item)
        {
            // Item = (token slice, row chunk): rows [o0, o0 + rows) for tokens [t0, t0 + tokens).
            int chunk = item % RowChunks, t0 = item / RowChunks * SliceTokens, tokens = Math.Min(SliceTokens, Tokens - t0);
            int o0 = chunk * ChunkRows, rows = Math.Min(ChunkRows, OutF - o0);
            int k16 = InF & ~15;
            int size = WType == DType.F32 ? 4 : 2;
            long rowBytes = WStride * size;
            byte* weights = W + o0 * rowBytes;
            int rowTiles = (rows + TileRows - 1) / TileRows;
            // More than one token tile: the chunk's rows are converted to an F32 panel (unless already F32; the rows are
            // one contiguous stream) and walked in k-blocks, so a block of the panel stays in L1 while every token tile
            // of the group passes over it. One token tile (decode): a single pass straight over the weights.
            bool blocked = tokens > TileTokens;
            bool convert = WType == DType.F16 || (WType == DType.BF16 && blocked);
            int kBlock = blocked ? KBlock : Math.Max(k16, 16);
            byte* source = weights;
            long stride = rowBytes;
            float** xs = stackalloc float*[GroupTokens];
            var acc = Scratch.Accumulators(GroupTokens / TileTokens * rowTiles * TileRows * TileTokens);
            for (int g0 = t0; g0 < t0 + tokens; g0 += GroupTokens)
            {
                int groupTokens = Math.Min(GroupTokens, t0 + tokens - g0);
                int tokenTiles = (groupTokens + TileTokens - 1) / TileTokens;
                for (int j = 0; j < groupTokens; j++) xs[j] = X + TokenRow(g0 + j) * XStride;
                if (convert)
                {
                    float* panel = Scratch.Panel(ChunkRows * k16);
                    for (int r = 0; r < rows; r++) ToFloat(weights + r * rowBytes, WType, panel + (long)r * k16, k16);
                    source = (byte*)panel;
                    stride = (long)k16 * 4;
                }
                bool f32 = convert || WType == DType.F32;
                for (int k0 = 0; k0 < k16 || k0 == 0; k0 += kBlock)
                {
                    int k1 = Math.Min(k16, k0 + kBlock);
                    for (int tt = 0; tt < tokenTiles; tt++)
                    {
                        int n = Math.Min(TileTokens, groupTokens - tt * TileTokens);
                        for (int rt = 0; rt < rowTiles; rt++)
                        {
                            // A partial tile repeats its last row; the repeated results are not stored.
                            int r0 = rt * TileRows;
                            byte* w0 = source + r0 * stride;
                            byte* w1 = r0 + 1 < rows ? w0 + stride : w0;
                            byte* w2 = r0 + 2 < rows ? w1 + stride : w1;
                            byte* w3 = r0 + 3 < rows ? w2 + stride : w2;
                            var tileAcc = acc + (tt * rowTiles + rt) * TileRows * TileTokens;
                            if (f32) Tile<F32Rows>(n, w0, w1, w2, w3, xs + tt * TileTokens, k0, k1, tileAcc);
                            else Tile<Bf16Rows>(n, w0, w1, w2, w3, xs + tt * TileTokens, k0, k1, tileAcc);
                        }
                    }
                }
                for (int j = 0; j < groupTokens; j++) Store(acc, rowTiles, j, rows, weights, xs[j], Y + TokenRow(g0 + j) * YStride + o0, k16);
            }
        }

        long TokenRow(int i) => TokenRows != null ? TokenRows[i] : i;

        /// <summary>
        /// Token j of the group: its accumulators for the chunk's rows are summed 16 at a time (HostDot.Reduce16, the same
        /// bits as HostDot.Reduce), the in % 16 tail terms are added with FMA one k at a time, and y is written (or added to).
        /// </summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        void Store(Vector512<float>* acc, int rowTiles, int j, int rows, byte* weights, float* x, float* y, int k16)
        {
            var zero = Vector512<float>.Zero;
            var accOfRow = stackalloc Vector512<float>*[16];
            var tail = stackalloc float[16];
            int tt = j / TileTokens, jj = j % TileTokens;
            long rowBytes = WStride * (WType == DType.F32 ? 4 : 2);
            for (int r0 = 0; r0 < rows; r0 += 16)
            {
                int n = Math.Min(16, rows - r0);
                for (int i = 0; i < 16; i++)
                {
                    int r = r0 + i;
                    accOfRow[i] = i < n ? acc + (tt * rowTiles + r / TileRows) * TileRows * TileTokens + r % TileRows * TileTokens + jj : &zero;
                }
                var sums = HostDot.Reduce16(accOfRow);
                for (int k = k16; k < InF; k++)
                {
                    for (int i = 0; i < 16; i++) tail[i] = i < n ? HostMemory.WeightAt(weights + (r0 + i) * rowBytes, WType, k) : 0f;
                    sums = Vector512.FusedMultiplyAdd(Vector512.Load(tail), Vector512.Create(x[k]), sums);
                }
                float* dst = y + r0;
                if (n == 16)
                {
                    if (Accumulate) sums += Vector512.Load(dst);
                    sums.Store(dst);
                }
                else
                {
                    sums.Store(tail);
                    for (int i = 0; i < n; i++) dst[i] = Accumulate ? dst[i] + tail[i] : tail[i];
                }
            }
        }
    }

    static void Tile<TRows>(int n, byte* w0, byte* w1, byte* w2, byte* w3, float** xs, int k0, int k1, Vector512<float>* acc)
        where TRows : struct, IRows
    {
        switch (n)
        {
            case 1: Tile<TRows, N1>(w0, w1, w2, w3, xs, k0, k1, acc); break;
            case 2: Tile<TRows, N2>(w0, w1, w2, w3, xs, k0, k1, acc); break;
            case 3: Tile<TRows, N3>(w0, w1, w2, w3, xs, k0, k1, acc); break;
            case 4: Tile<TRows, N4>(w0, w1, w2, w3, xs, k0, k1, acc); break;
            case 5: Tile<TRows, N5>(w0, w1, w2, w3, xs, k0, k1, acc); break;
            default: Tile<TRows, N6>(w0, w1, w2, w3, xs, k0, k1, acc); break;
        }
    }

    /// <summary>
    /// acc[r·6 + j] += W[r, k..k+16] ⊙ x_j[k..k+16] for k = k0, k0+16, … &lt; k1 (starting from zero when k0 = 0), for 4 rows ×
    /// TN.Value tokens: 24 accumulators at most, four weight vectors and one token vector live at a time (29 of the 32
    /// vector registers).
    /// </summary>
    [SkipLocalsInit]
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Tile<TRows, TN>(byte* w0, byte* w1, byte* w2, byte* w3, float** xs, int k0, int k1, Vector512<float>* acc)
        where TRows : struct, IRows where TN : struct, ITokenCount
    {
        int n = TN.Value;
        float* x0 = xs[0], x1 = n > 1 ? xs[1] : x0, x2 = n > 2 ? xs[2] : x0;
        float* x3 = n > 3 ? xs[3] : x0, x4 = n > 4 ? xs[4] : x0, x5 = n > 5 ? xs[5] : x0;
        Vector512<float> a00 = default, a01 = default, a02 = default, a03 = default, a04 = default, a05 = default;
        Vector512<float> a10 = default, a11 = default, a12 = default, a13 = default, a14 = default, a15 = default;
        Vector512<float> a20 = default, a21 = default, a22 = default, a23 = default, a24 = default, a25 = default;
        Vector512<float> a30 = default, a31 = default, a32 = default, a33 = default, a34 = default, a35 = default;
        if (k0 > 0)
        {
            a00 = acc[0]; a01 = acc[1]; a02 = acc[2]; a03 = acc[3]; a04 = acc[4]; a05 = acc[5];
            a10 = acc[6]; a11 = acc[7]; a12 = acc[8]; a13 = acc[9]; a14 = acc[10]; a15 = acc[11];
            a20 = acc[12]; a21 = acc[13]; a22 = acc[14]; a23 = acc[15]; a24 = acc[16]; a25 = acc[17];
            a30 = acc[18]; a31 = acc[19]; a32 = acc[20]; a33 = acc[21]; a34 = acc[22]; a35 = acc[23];
        }
        for (int k = k0; k < k1; k += 16)
        {
            var v0 = TRows.Load(w0, k);
            var v1 = TRows.Load(w1, k);
            var v2 = TRows.Load(w2, k);
            var v3 = TRows.Load(w3, k);
            var xv = Vector512.Load(x0 + k);
            a00 = Vector512.FusedMultiplyAdd(v0, xv, a00);
            a10 = Vector512.FusedMultiplyAdd(v1, xv, a10);
            a20 = Vector512.FusedMultiplyAdd(v2, xv, a20);
            a30 = Vector512.FusedMultiplyAdd(v3, xv, a30);
            if (n > 1)
            {
                xv = Vector512.Load(x1 + k);
                a01 = Vector512.FusedMultiplyAdd(v0, xv, a01);
                a11 = Vector512.FusedMultiplyAdd(v1, xv, a11);
                a21 = Vector512.FusedMultiplyAdd(v2, xv, a21);
                a31 = Vector512.FusedMultiplyAdd(v3, xv, a31);
            }
            if (n > 2)
            {
                xv = Vector512.Load(x2 + k);
                a02 = Vector512.FusedMultiplyAdd(v0, xv, a02);
                a12 = Vector512.FusedMultiplyAdd(v1, xv, a12);
                a22 = Vector512.FusedMultiplyAdd(v2, xv, a22);
                a32 = Vector512.FusedMultiplyAdd(v3, xv, a32);
            }
            if (n > 3)
            {
                xv = Vector512.Load(x3 + k);
                a03 = Vector512.FusedMultiplyAdd(v0, xv, a03);
                a13 = Vector512.FusedMultiplyAdd(v1, xv, a13);
                a23 = Vector512.FusedMultiplyAdd(v2, xv, a23);
                a33 = Vector512.FusedMultiplyAdd(v3, xv, a33);
            }
            if (n > 4)
            {
                xv = Vector512.Load(x4 + k);
                a04 = Vector512.FusedMultiplyAdd(v0, xv, a04);
                a14 = Vector512.FusedMultiplyAdd(v1, xv, a14);
                a24 = Vector512.FusedMultiplyAdd(v2, xv, a24);
                a34 = Vector512.FusedMultiplyAdd(v3, xv, a34);
            }
            if (n > 5)
            {
                xv = Vector512.Load(x5 + k);
                a05 = Vector512.FusedMultiplyAdd(v0, xv, a05);
                a15 = Vector512.FusedMultiplyAdd(v1, xv, a15);
                a25 = Vector512.FusedMultiplyAdd(v2, xv, a25);
                a35 = Vector512.FusedMultiplyAdd(v3, xv, a35);
            }
        }
        acc[0] = a00; acc[1] = a01; acc[2] = a02; acc[3] = a03; acc[4] = a04; acc[5] = a05;
        acc[6] = a10; acc[7] = a11; acc[8] = a12; acc[9] = a13; acc[10] = a14; acc[11] = a15;
        acc[12] = a20; acc[13] = a21; acc[14] = a22; acc[15] = a23; acc[16] = a24; acc[17] = a25;
        acc[18] = a30; acc[19] = a31; acc[20] = a32; acc[21] = a33; acc[22] = a34; acc[23] = a35;
    }

    /// <summary>dst[k] = float(W[k]) for k &lt; count.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void ToFloat(byte* src, DType type, float* dst, int count)
    {
        if (type == DType.F16)
        {
            TensorPrimitives.ConvertToSingle(new ReadOnlySpan<Half>(src, count), new Span<float>(dst, count));
            return;
        }
        if (type == DType.F32)
        {
            Buffer.MemoryCopy(src, dst, (long)count * 4, (long)count * 4);
            return;
        }
        int k = 0;
        for (; k <= count - 16; k += 16) Vector512.Store(Bf16Rows.Load(src, k), dst + k);
        for (; k < count; k++) dst[k] = BitConverter.Int32BitsToSingle(((ushort*)src)[k] << 16);
    }

    /// <summary>Reads 16 consecutive weights of a row as F32.</summary>
    interface IRows
    {
        static abstract Vector512<float> Load(byte* row, int k);
    }

    struct F32Rows : IRows
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Load(byte* row, int k) => Vector512.Load((float*)row + k);
    }

    /// <summary>BF16 is the top half of an F32: zero-extend 16 values to 32 bits and shift them up.</summary>
    struct Bf16Rows : IRows
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Load(byte* row, int k) =>
            Avx512F.ShiftLeftLogical(Avx512F.ConvertToVector512UInt32(Vector256.Load((ushort*)row + k)), 16).AsSingle();
    }

    /// <summary>Tokens in a tile, as a type so that each count gets its own compiled tile with no branch in the loop.</summary>
    interface ITokenCount
    {
        static abstract int Value { get; }
    }

    struct N1 : ITokenCount { public static int Value => 1; }
    struct N2 : ITokenCount { public static int Value => 2; }
    struct N3 : ITokenCount { public static int Value => 3; }
    struct N4 : ITokenCount { public static int Value => 4; }
    struct N5 : ITokenCount { public static int Value => 5; }
    struct N6 : ITokenCount { public static int Value => 6; }

    /// <summary>Per-thread panel and accumulator memory, pinned and 64-byte aligned, grown on demand and kept for the thread's life.</summary>
    static class Scratch
    {
        [ThreadStatic] static float[]? t_panel;
        [ThreadStatic] static float[]? t_accumulators;

        public static float* Panel(int floats) => Aligned(ref t_panel, floats);

        public static Vector512<float>* Accumulators(int vectors) => (Vector512<float>*)Aligned(ref t_accumulators, vectors * 16);

        static float* Aligned(ref float[]? array, int floats)
        {
            if (array == null || array.Length < floats + 16) array = GC.AllocateUninitializedArray<float>(floats + 16, pinned: true);
            float* p = (float*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(array));
            return (float*)(((nint)p + 63) & ~(nint)63);
        }
    }
}
