using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace LoraEngine.Tensors.Kernels;

/// <summary>
/// The CPU device's linear for AVX-512 and AVX2 machines: y[t, o] = Σ_k W[o, k] · x[t, k] (or y[t, o] += …), W stored
/// [out, in] in F32, BF16 or F16. The tiles below are AVX-512's; <c>HostGemmAvx2.cs</c> has their AVX2 twins, which
/// compute the same bits.
///
/// Every output is one dot product in a fixed order, whatever the number of tokens (so a token's row is bit-identical
/// alone or in any batch): the k range is cut into steps of 16; one 16-lane accumulator takes the even steps and another
/// the odd steps, each in order (two chains, so one row can stream with two FMAs in flight); their sum is reduced by
/// <see cref="HostDot.Reduce"/> (16 rows at once by <see cref="HostDot.Reduce16(Vector512{float}**)"/>, same bits);
/// then the last in % 16 terms are added one by one with FMA.
///
/// Work items are chunks of output rows spread over the cores (<see cref="HostParallel"/>). Two ways to compute them:
/// - up to <see cref="MaxStreamTokens"/> tokens (decode): row after row, BF16 or F32 weights read in place (BF16 widened
///   in registers) for all the tokens at once, so the weights stream from memory exactly once and in order;
/// - more tokens (prefill, batched decode): a register tile of 4 rows × 6 tokens (24 accumulators: each weight vector
///   loaded once per 6 tokens, each token vector once per 4 rows). Each thread packs the tokens once per call into its
///   own copy of 6-token tiles, and a chunk's rows are copied once into a panel of 4-row tiles (BF16 kept as BF16 and
///   widened in registers, F16 converted to F32), both laid out so each accumulator chain reads one sequential stream;
///   for each token tile the k range is walked in blocks so the tile's block stays in L1 while the chunk's row tiles
///   pass over it.
/// </summary>
internal static unsafe partial class HostGemm
{
    /// <summary>Tokens up to which BF16 and F32 weights are read in place (one token tile: every weight read once).</summary>
    public const int MaxStreamTokens = TileTokens;

    const int TileRows = 4;
    const int TileTokens = 6;
    const int StreamChunkRows = 16;          // rows per work item when streaming weights (64 KB of BF16 at in = 2048)
    const int StreamPrefetchElements = 4096; // streamed rows: prefetch distance (8 KB of BF16)
    const int KBlock = 1024;                 // packed path: a token tile's k-block is 6 × 1024 × 4 B = 24 KB, in L1

    /// <summary>Linear calls so far: tells a thread whether its packed tokens belong to the current call.</summary>
    static long s_calls;

    /// <summary>
    /// Whether this machine runs these kernels: AVX-512, or AVX2 with FMA (<see cref="HostGemm"/>'s AVX2 tiles, same
    /// bits); otherwise callers use a portable path.
    /// </summary>
    public static bool IsSupported => Avx512 || (Avx2.IsSupported && Fma.IsSupported);

    /// <summary>AVX-512 tiles (32 registers of 16 lanes); else the AVX2 ones. A JIT-time constant: the other kind is never compiled in.</summary>
    public static bool Avx512 => Vector512.IsHardwareAccelerated && Avx512F.IsSupported;

    /// <summary>
    /// y[i·yStride + o] (+)= Σ_k W[o, k] · x[i·xStride + k] for o &lt; outF and i &lt; tokens, where row i is
    /// tokenRows[i] when given (LoRA gathers a slot's tokens), else i.
    /// </summary>
    /// <param name="y">output rows, F32</param>
    /// <param name="yStride">floats from one output row to the next</param>
    /// <param name="x">input rows, F32</param>
    /// <param name="xStride">floats from one input row to the next</param>
    /// <param name="tokenRows">the x and y row of each token, or null for rows 0..tokens-1</param>
    /// <param name="tokens">tokens to compute (none: nothing happens)</param>
    /// <param name="w">W [out, in]: element o·wStride + k (F32 floats, or BF16/F16 bits)</param>
    /// <param name="wType">F32, BF16 or F16: how <paramref name="w"/> is stored</param>
    /// <param name="wStride">elements from one weight row to the next</param>
    /// <param name="outF">output features: weight rows</param>
    /// <param name="inF">input features: the k range</param>
    /// <param name="accumulate">add to y instead of overwriting it</param>
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
        job.Packed = tokens > TileTokens;
        // Panels of 16 rows × in stay in L2 (≤ 512 KB); with in ≤ 4096, 32 rows let a token block serve 8 row tiles.
        job.ChunkRows = !job.Packed ? StreamChunkRows : inF <= 4096 ? 32 : 16;
        job.RowChunks = (outF + job.ChunkRows - 1) / job.ChunkRows;
        // Too few row chunks to keep the cores busy (LoRA shrink: rank rows) and many tokens: split the tokens too.
        job.SliceTokens = job.RowChunks < 4 * HostParallel.Threads ? 4 * TileTokens : tokens;
        job.Call = Interlocked.Increment(ref s_calls);
        int items = job.RowChunks * ((tokens + job.SliceTokens - 1) / job.SliceTokens);
        // Small products (LoRA shrink at decode) are not worth a trip to the other core.
        if ((long)outF * inF * tokens < 1 << 16) for (int i = 0; i < items; i++) job.Run(i);
        else HostParallel.For(items, job);
    }

    /// <summary>
    /// Where k-step s of <paramref name="steps"/> sits in the packed layouts: k-blocks of KBlock/16 steps, each with its
    /// even steps first, so each of the two accumulator chains reads its steps as one sequential stream.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static int PackedStep(int s, int steps)
    {
        const int blockSteps = KBlock / 16;
        int b0 = s / blockSteps * blockSteps, b = Math.Min(blockSteps, steps - b0), i = s - b0;
        return b0 + ((i & 1) == 0 ? i / 2 : (b + 1) / 2 + i / 2);
    }

    /// <summary>
    /// Copies x[:, 0..in16) into tiles of 6 tokens: tile τ starts at τ·6·in16 and holds, for each k-step s (at its
    /// PackedStep), the n tokens' 16 values x[t, 16s..16s+16] one after the other (n = 6, or fewer in the last tile).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static float* PackTokens(LinearJob job)
    {
        int k16 = job.InF & ~15, tiles = (job.Tokens + TileTokens - 1) / TileTokens;
        float* packed = Scratch.Get(ref Scratch.Tokens, (long)tiles * TileTokens * k16);
        Scratch.TokensCall = job.Call;
        for (int tile = 0; tile < tiles; tile++)
        {
            int t0 = tile * TileTokens, n = Math.Min(TileTokens, job.Tokens - t0);
            float* dst = packed + (long)t0 * k16;
            for (int j = 0; j < n; j++)
            {
                float* src = job.X + job.TokenRow(t0 + j) * job.XStride;
                int steps = k16 / 16;
                for (int s = 0; s < steps; s++) Vector512.Load(src + 16 * s).Store(dst + (PackedStep(s, steps) * n + j) * 16);
            }
        }
        return packed;
    }

    sealed class LinearJob : HostJob
    {
        [ThreadStatic] static LinearJob? t_job;

        public static LinearJob ForThisThread => t_job ??= new LinearJob();

        public float* Y, X;
        public long Call;
        public long YStride, XStride, WStride;
        public int* TokenRows;
        public int Tokens, OutF, InF, ChunkRows, RowChunks, SliceTokens;
        public byte* W;
        public DType WType;
        public bool Accumulate, Packed;

        public long TokenRow(int i) => TokenRows != null ? TokenRows[i] : i;

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public override void Run(int item)
        {
            // Item = (token slice, row chunk): rows [o0, o0 + rows) for tokens [t0, t0 + tokens).
            int chunk = item % RowChunks, t0 = item / RowChunks * SliceTokens, tokens = Math.Min(SliceTokens, Tokens - t0);
            int o0 = chunk * ChunkRows, rows = Math.Min(ChunkRows, OutF - o0);
            if (Packed) RunPacked(o0, rows, t0, tokens);
            else RunStreamed(o0, rows, t0, tokens);
        }

        /// <summary>
        /// At most one token tile: row by row, each row read once straight from the weights as one sequential stream
        /// (several rows in flight at once read slower from memory on this kind of machine than one row after another).
        /// </summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        void RunStreamed(int o0, int rows, int t0, int n)
        {
            int k16 = InF & ~15, size = WType == DType.F32 ? 4 : 2;
            long rowBytes = WStride * size;
            byte* weights = W + o0 * rowBytes;
            byte* source = weights;
            long stride = rowBytes;
            if (WType == DType.F16)
            {
                // No F16 widening in registers here (no AVX-512 FP16): the chunk's rows go through an F32 copy.
                float* rowsF32 = Scratch.Get(ref Scratch.Panel, (long)rows * k16);
                for (int r = 0; r < rows; r++) ToFloat(weights + r * rowBytes, WType, rowsF32 + (long)r * k16, k16);
                source = (byte*)rowsF32;
                stride = (long)k16 * 4;
            }
            float** xs = stackalloc float*[TileTokens];
            for (int j = 0; j < n; j++) xs[j] = X + TokenRow(t0 + j) * XStride;
            var acc = stackalloc Vector512<float>[StreamChunkRows * TileTokens]; // Store's layout: row r, token j at (r/4)·24 + (r%4)·6 + j
            for (int r = 0; r < rows; r++)
            {
                var rowAcc = acc + r / TileRows * TileRows * TileTokens + r % TileRows * TileTokens;
                if (!Avx512)
                {
                    if (WType == DType.BF16) RowTileAvx2<Bf16Halves>(n, source + r * stride, xs, k16, rowAcc);
                    else RowTileAvx2<F32Halves>(n, source + r * stride, xs, k16, rowAcc);
                }
                else if (WType == DType.BF16) RowTile<Bf16Rows>(n, source + r * stride, xs, k16, rowAcc);
                else RowTile<F32Rows>(n, source + r * stride, xs, k16, rowAcc);
            }
            int rowTiles = (rows + TileRows - 1) / TileRows;
            for (int j = 0; j < n; j++) Store(acc, rowTiles, TileRows * TileTokens, j, rows, weights, xs[j], Y + TokenRow(t0 + j) * YStride + o0, k16);
        }

        /// <summary>
        /// More than one token tile: packed tokens (see PackTokens) against an F32 panel of the chunk's rows. For each token
        /// tile, k-block by k-block, the chunk's row tiles pass over the tile's block (in L1); the tile's accumulators stay
        /// in L1 until its outputs are stored.
        /// </summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        void RunPacked(int o0, int rows, int t0, int tokens)
        {
            int k16 = InF & ~15, size = WType == DType.F32 ? 4 : 2;
            long rowBytes = WStride * size;
            byte* weights = W + o0 * rowBytes;
            int rowTiles = (rows + TileRows - 1) / TileRows;
            // BF16 rows stay BF16 in the panel (half the bytes; widened in registers by the tile), F16 and F32 become F32.
            bool bf16 = WType == DType.BF16;
            int panelSize = bf16 ? 2 : 4;
            byte* panel = PackRows(weights, rows, rowTiles, k16);
            // Each thread packs the tokens into its own copy on its first item of the call, which then stays in its own
            // core's caches (one copy packed by the caller and read by both cores: ~8 % slower at two threads here).
            float* xPacked = Scratch.TokensCall == Call ? Scratch.Aligned(Scratch.Tokens!) : PackTokens(this);
            // Per row tile: 24 accumulators of the even k-steps, then 24 of the odd ones (the last k-block's odd tile adds
            // its sums into the first 24).
            const int tileStride = 2 * TileRows * TileTokens;
            var acc = (Vector512<float>*)Scratch.Get(ref Scratch.Accumulators, (long)rowTiles * tileStride * 16);
            for (int first = t0; first < t0 + tokens; first += TileTokens)
            {
                int n = Math.Min(TileTokens, t0 + tokens - first);
                float* xTile = xPacked + (long)first * k16;
                for (int k0 = 0; k0 < k16 || k0 == 0; k0 += KBlock)
                {
                    int steps = (Math.Min(k16, k0 + KBlock) - k0) / 16, even = (steps + 1) / 2;
                    bool last = k0 + KBlock >= k16;
                    float* xEven = xTile + (long)k0 * n, xOdd = xEven + even * 16 * n;
                    for (int rt = 0; rt < rowTiles; rt++)
                    {
                        byte* wEven = panel + ((long)rt * TileRows * k16 + k0 * TileRows) * panelSize, wOdd = wEven + even * 16 * TileRows * panelSize;
                        var tileAcc = acc + rt * tileStride;
                        if (!Avx512)
                        {
                            if (bf16)
                            {
                                PackedTileAvx2<Bf16PanelHalves>(n, wEven, xEven, even, k0 > 0, tileAcc, null);
                                PackedTileAvx2<Bf16PanelHalves>(n, wOdd, xOdd, steps - even, k0 > 0, tileAcc + TileRows * TileTokens, last ? tileAcc : null);
                            }
                            else
                            {
                                PackedTileAvx2<F32Halves>(n, wEven, xEven, even, k0 > 0, tileAcc, null);
                                PackedTileAvx2<F32Halves>(n, wOdd, xOdd, steps - even, k0 > 0, tileAcc + TileRows * TileTokens, last ? tileAcc : null);
                            }
                        }
                        else if (bf16)
                        {
                            PackedTile<Bf16Rows>(n, wEven, xEven, even, k0 > 0, tileAcc, null);
                            PackedTile<Bf16Rows>(n, wOdd, xOdd, steps - even, k0 > 0, tileAcc + TileRows * TileTokens, last ? tileAcc : null);
                        }
                        else
                        {
                            PackedTile<F32Rows>(n, wEven, xEven, even, k0 > 0, tileAcc, null);
                            PackedTile<F32Rows>(n, wOdd, xOdd, steps - even, k0 > 0, tileAcc + TileRows * TileTokens, last ? tileAcc : null);
                        }
                    }
                }
                for (int j = 0; j < n; j++)
                {
                    long row = TokenRow(first + j);
                    Store(acc, rowTiles, tileStride, j, rows, weights, X + row * XStride, Y + row * YStride + o0, k16);
                }
            }
        }

        /// <summary>
        /// The chunk's rows in 4-row tiles, BF16 kept as BF16 and F16/F32 as F32: tile rt starts at rt·4·in16 and holds,
        /// for each k-step s (at its PackedStep), rows 4rt..4rt+3's 16 values W[r, 16s..16s+16] one after the other (a
        /// partial last tile repeats its last row; on AVX2 a BF16 step's values are in StorePanelStepAvx2's order).
        /// </summary>
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        byte* PackRows(byte* weights, int rows, int rowTiles, int k16)
        {
            int size = WType == DType.F32 ? 4 : 2, steps = k16 / 16;
            long rowBytes = WStride * size;
            if (WType == DType.BF16)
            {
                ushort* panel = (ushort*)Scratch.Get(ref Scratch.Panel, (long)rowTiles * TileRows * k16 / 2);
                const int blockSteps = KBlock / 16, stepElements = TileRows * 16;
                for (int r = 0; r < rowTiles * TileRows; r++)
                {
                    ushort* dst = panel + (long)(r / TileRows) * TileRows * k16 + r % TileRows * 16;
                    ushort* src = (ushort*)(weights + Math.Min(r, rows - 1) * rowBytes);
                    // PackedStep's order, a pair of steps (one 64-byte load) at a time: the even one to the block's first
                    // half, the odd one to its second.
                    for (int b0 = 0; b0 < steps; b0 += blockSteps)
                    {
                        int b = Math.Min(blockSteps, steps - b0), i = 0;
                        ushort* even = dst + b0 * stepElements, odd = even + (b + 1) / 2 * stepElements;
                        if (!Avx512)
                        {
                            // Each step in the order the AVX2 tile reads (StorePanelStepAvx2).
                            for (; i < b; i++) StorePanelStepAvx2(src + 16 * (b0 + i), (i & 1) == 0 ? even + i / 2 * stepElements : odd + i / 2 * stepElements);
                            continue;
                        }
                        for (; i + 1 < b; i += 2)
                        {
                            var pair = Vector512.Load(src + 16 * (b0 + i));
                            pair.GetLower().Store(even + i / 2 * stepElements);
                            pair.GetUpper().Store(odd + i / 2 * stepElements);
                        }
                        if (i < b) Vector256.Load(src + 16 * (b0 + i)).Store(even + i / 2 * stepElements);
                    }
                }
                return (byte*)panel;
            }
            float* panelF32 = Scratch.Get(ref Scratch.Panel, (long)rowTiles * TileRows * k16);
            float* row = Scratch.Get(ref Scratch.Row, k16);
            for (int r = 0; r < rowTiles * TileRows; r++)
            {
                float* dst = panelF32 + (long)(r / TileRows) * TileRows * k16 + r % TileRows * 16;
                ToFloat(weights + Math.Min(r, rows - 1) * rowBytes, WType, row, k16);
                for (int s = 0; s < steps; s++) Vector512.Load(row + 16 * s).Store(dst + PackedStep(s, steps) * TileRows * 16);
            }
            return (byte*)panelF32;
        }

        /// <summary>
        /// Token j of a token tile: its (even + odd) accumulators for the chunk's rows are summed 16 at a time, the in % 16 tail
        /// terms are added with FMA one k at a time, and y is written (or added to).
        /// </summary>
        [SkipLocalsInit]
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        void Store(Vector512<float>* acc, int rowTiles, int tileStride, int j, int rows, byte* weights, float* x, float* y, int k16)
        {
            var zero = Vector512<float>.Zero;
            var accOfRow = stackalloc Vector512<float>*[16];
            var tail = stackalloc float[16];
            long rowBytes = WStride * (WType == DType.F32 ? 4 : 2);
            for (int r0 = 0; r0 < rows; r0 += 16)
            {
                int n = Math.Min(16, rows - r0);
                Vector512<float> sums;
                if (n == 16)
                {
                    // Rows r0..r0+15 of token j: four row tiles, tileStride apart, each holding its 4 rows 6 accumulators apart.
                    var b = acc + r0 / TileRows * tileStride + j;
                    int s = tileStride;
                    const int r = TileTokens;
                    sums = HostDot.Reduce16(b[0], b[r], b[2 * r], b[3 * r], b[s], b[s + r], b[s + 2 * r], b[s + 3 * r],
                        b[2 * s], b[2 * s + r], b[2 * s + 2 * r], b[2 * s + 3 * r], b[3 * s], b[3 * s + r], b[3 * s + 2 * r], b[3 * s + 3 * r]);
                }
                else
                {
                    for (int i = 0; i < 16; i++)
                    {
                        int r = r0 + i;
                        accOfRow[i] = i < n ? acc + r / TileRows * tileStride + r % TileRows * TileTokens + j : &zero;
                    }
                    sums = HostDot.Reduce16(accOfRow);
                }
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

    /// <summary>Per-thread scratch memory, pinned and 64-byte aligned, grown on demand and kept for the thread's life.</summary>
    static class Scratch
    {
        [ThreadStatic] public static float[]? Tokens;
        [ThreadStatic] public static float[]? Panel;
        [ThreadStatic] public static float[]? Row;
        [ThreadStatic] public static float[]? Accumulators;

        /// <summary>The call whose packed tokens <see cref="Tokens"/> holds.</summary>
        [ThreadStatic] public static long TokensCall;

        public static float* Get(ref float[]? array, long floats)
        {
            if (array == null || array.LongLength < floats + 16) array = GC.AllocateUninitializedArray<float>(checked((int)(floats + 16)), pinned: true);
            return Aligned(array);
        }

        public static float* Aligned(float[] array)
        {
            float* p = (float*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(array));
            return (float*)(((nint)p + 63) & ~(nint)63);
        }
    }
}
