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
internal static unsafe class HostGemm
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

    /// <summary>Whether this machine runs these kernels (AVX-512); otherwise callers use a portable path.</summary>
    public static bool IsSupported => Vector512.IsHardwareAccelerated && Avx512F.IsSupported;

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
                if (WType == DType.BF16) RowTile<Bf16Rows>(n, source + r * stride, xs, k16, rowAcc);
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
                        if (bf16)
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
        /// The chunk's rows as F32 in 4-row tiles: tile rt starts at rt·4·in16 and holds, for each k-step s (at its
        /// PackedStep), rows 4rt..4rt+3's 16 values W[r, 16s..16s+16] one after the other (a partial last tile repeats its
        /// last row).
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

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void RowTile<TRows>(int n, byte* row, float** xs, int k16, Vector512<float>* v) where TRows : struct, IRows
    {
        switch (n)
        {
            case 1: RowTile<TRows, N1>(row, xs, k16, v); break;
            case 2: RowTile<TRows, N2>(row, xs, k16, v); break;
            case 3: RowTile<TRows, N3>(row, xs, k16, v); break;
            case 4: RowTile<TRows, N4>(row, xs, k16, v); break;
            case 5: RowTile<TRows, N5>(row, xs, k16, v); break;
            default: RowTile<TRows, N6>(row, xs, k16, v); break;
        }
    }

    /// <summary>
    /// v[j] = (Σ over even k-steps of W[k..k+16] ⊙ x_j[k..k+16]) + (Σ over odd k-steps …) for one row read in place and
    /// TN.Value tokens: two accumulators per token keep two FMA chains in flight while the row streams.
    /// </summary>
    [SkipLocalsInit]
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void RowTile<TRows, TN>(byte* row, float** xs, int k16, Vector512<float>* v)
        where TRows : struct, IRows where TN : struct, ITokenCount
    {
        int n = TN.Value;
        float* x0 = xs[0], x1 = n > 1 ? xs[1] : x0, x2 = n > 2 ? xs[2] : x0;
        float* x3 = n > 3 ? xs[3] : x0, x4 = n > 4 ? xs[4] : x0, x5 = n > 5 ? xs[5] : x0;
        Vector512<float> e0 = default, e1 = default, e2 = default, e3 = default, e4 = default, e5 = default;
        Vector512<float> o0 = default, o1 = default, o2 = default, o3 = default, o4 = default, o5 = default;
        int k = 0;
        for (; k + 32 <= k16; k += 32)
        {
            // A line 8 KB ahead into L2: more reads in flight than the hardware prefetcher keeps across 4 KB pages.
            Sse.Prefetch1(row + (k + StreamPrefetchElements) * TRows.Size);
            var w = TRows.Load(row, k);
            e0 = Vector512.FusedMultiplyAdd(w, Vector512.Load(x0 + k), e0);
            if (n > 1) e1 = Vector512.FusedMultiplyAdd(w, Vector512.Load(x1 + k), e1);
            if (n > 2) e2 = Vector512.FusedMultiplyAdd(w, Vector512.Load(x2 + k), e2);
            if (n > 3) e3 = Vector512.FusedMultiplyAdd(w, Vector512.Load(x3 + k), e3);
            if (n > 4) e4 = Vector512.FusedMultiplyAdd(w, Vector512.Load(x4 + k), e4);
            if (n > 5) e5 = Vector512.FusedMultiplyAdd(w, Vector512.Load(x5 + k), e5);
            w = TRows.Load(row, k + 16);
            o0 = Vector512.FusedMultiplyAdd(w, Vector512.Load(x0 + k + 16), o0);
            if (n > 1) o1 = Vector512.FusedMultiplyAdd(w, Vector512.Load(x1 + k + 16), o1);
            if (n > 2) o2 = Vector512.FusedMultiplyAdd(w, Vector512.Load(x2 + k + 16), o2);
            if (n > 3) o3 = Vector512.FusedMultiplyAdd(w, Vector512.Load(x3 + k + 16), o3);
            if (n > 4) o4 = Vector512.FusedMultiplyAdd(w, Vector512.Load(x4 + k + 16), o4);
            if (n > 5) o5 = Vector512.FusedMultiplyAdd(w, Vector512.Load(x5 + k + 16), o5);
        }
        if (k < k16)
        {
            var w = TRows.Load(row, k);
            e0 = Vector512.FusedMultiplyAdd(w, Vector512.Load(x0 + k), e0);
            if (n > 1) e1 = Vector512.FusedMultiplyAdd(w, Vector512.Load(x1 + k), e1);
            if (n > 2) e2 = Vector512.FusedMultiplyAdd(w, Vector512.Load(x2 + k), e2);
            if (n > 3) e3 = Vector512.FusedMultiplyAdd(w, Vector512.Load(x3 + k), e3);
            if (n > 4) e4 = Vector512.FusedMultiplyAdd(w, Vector512.Load(x4 + k), e4);
            if (n > 5) e5 = Vector512.FusedMultiplyAdd(w, Vector512.Load(x5 + k), e5);
        }
        v[0] = e0 + o0;
        if (n > 1) v[1] = e1 + o1;
        if (n > 2) v[2] = e2 + o2;
        if (n > 3) v[3] = e3 + o3;
        if (n > 4) v[4] = e4 + o4;
        if (n > 5) v[5] = e5 + o5;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void PackedTile<TRows>(int n, byte* w, float* x, int steps, bool resume, Vector512<float>* acc, Vector512<float>* sumInto)
        where TRows : struct, IRows
    {
        switch (n)
        {
            case 1: PackedTile<TRows, N1>(w, x, steps, resume, acc, sumInto); break;
            case 2: PackedTile<TRows, N2>(w, x, steps, resume, acc, sumInto); break;
            case 3: PackedTile<TRows, N3>(w, x, steps, resume, acc, sumInto); break;
            case 4: PackedTile<TRows, N4>(w, x, steps, resume, acc, sumInto); break;
            case 5: PackedTile<TRows, N5>(w, x, steps, resume, acc, sumInto); break;
            default: PackedTile<TRows, N6>(w, x, steps, resume, acc, sumInto); break;
        }
    }

    /// <summary>
    /// The tile on packed operands: per k-step, 4 panel vectors at w (64 values, BF16 widened in registers, or F32) and
    /// TN.Value token vectors at x (16·n floats), both read sequentially. acc[r·6 + j] += W[r, k..k+16] ⊙ x_j[k..k+16] for
    /// the given steps; it starts from zero unless <paramref name="resume"/> (a later k-block of the same outputs). With
    /// <paramref name="sumInto"/> (the other chain's accumulators, after its last step) the sums go there instead:
    /// sumInto[i] += acc[i].
    /// </summary>
    [SkipLocalsInit]
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void PackedTile<TRows, TN>(byte* w, float* x, int steps, bool resume, Vector512<float>* acc, Vector512<float>* sumInto)
        where TRows : struct, IRows where TN : struct, ITokenCount
    {
        int n = TN.Value;
        Vector512<float> a00 = default, a01 = default, a02 = default, a03 = default, a04 = default, a05 = default;
        Vector512<float> a10 = default, a11 = default, a12 = default, a13 = default, a14 = default, a15 = default;
        Vector512<float> a20 = default, a21 = default, a22 = default, a23 = default, a24 = default, a25 = default;
        Vector512<float> a30 = default, a31 = default, a32 = default, a33 = default, a34 = default, a35 = default;
        if (resume)
        {
            a00 = acc[0]; a01 = acc[1]; a02 = acc[2]; a03 = acc[3]; a04 = acc[4]; a05 = acc[5];
            a10 = acc[6]; a11 = acc[7]; a12 = acc[8]; a13 = acc[9]; a14 = acc[10]; a15 = acc[11];
            a20 = acc[12]; a21 = acc[13]; a22 = acc[14]; a23 = acc[15]; a24 = acc[16]; a25 = acc[17];
            a30 = acc[18]; a31 = acc[19]; a32 = acc[20]; a33 = acc[21]; a34 = acc[22]; a35 = acc[23];
        }
        for (int s = 0; s < steps; s++, w += 64 * TRows.Size, x += 16 * n)
        {
            var v0 = TRows.Load(w, 0);
            var v1 = TRows.Load(w, 16);
            var v2 = TRows.Load(w, 32);
            var v3 = TRows.Load(w, 48);
            var xv = Vector512.Load(x);
            a00 = Vector512.FusedMultiplyAdd(v0, xv, a00);
            a10 = Vector512.FusedMultiplyAdd(v1, xv, a10);
            a20 = Vector512.FusedMultiplyAdd(v2, xv, a20);
            a30 = Vector512.FusedMultiplyAdd(v3, xv, a30);
            if (n > 1)
            {
                xv = Vector512.Load(x + 16);
                a01 = Vector512.FusedMultiplyAdd(v0, xv, a01);
                a11 = Vector512.FusedMultiplyAdd(v1, xv, a11);
                a21 = Vector512.FusedMultiplyAdd(v2, xv, a21);
                a31 = Vector512.FusedMultiplyAdd(v3, xv, a31);
            }
            if (n > 2)
            {
                xv = Vector512.Load(x + 32);
                a02 = Vector512.FusedMultiplyAdd(v0, xv, a02);
                a12 = Vector512.FusedMultiplyAdd(v1, xv, a12);
                a22 = Vector512.FusedMultiplyAdd(v2, xv, a22);
                a32 = Vector512.FusedMultiplyAdd(v3, xv, a32);
            }
            if (n > 3)
            {
                xv = Vector512.Load(x + 48);
                a03 = Vector512.FusedMultiplyAdd(v0, xv, a03);
                a13 = Vector512.FusedMultiplyAdd(v1, xv, a13);
                a23 = Vector512.FusedMultiplyAdd(v2, xv, a23);
                a33 = Vector512.FusedMultiplyAdd(v3, xv, a33);
            }
            if (n > 4)
            {
                xv = Vector512.Load(x + 64);
                a04 = Vector512.FusedMultiplyAdd(v0, xv, a04);
                a14 = Vector512.FusedMultiplyAdd(v1, xv, a14);
                a24 = Vector512.FusedMultiplyAdd(v2, xv, a24);
                a34 = Vector512.FusedMultiplyAdd(v3, xv, a34);
            }
            if (n > 5)
            {
                xv = Vector512.Load(x + 80);
                a05 = Vector512.FusedMultiplyAdd(v0, xv, a05);
                a15 = Vector512.FusedMultiplyAdd(v1, xv, a15);
                a25 = Vector512.FusedMultiplyAdd(v2, xv, a25);
                a35 = Vector512.FusedMultiplyAdd(v3, xv, a35);
            }
        }
        if (sumInto != null)
        {
            a00 += sumInto[0]; a01 += sumInto[1]; a02 += sumInto[2]; a03 += sumInto[3]; a04 += sumInto[4]; a05 += sumInto[5];
            a10 += sumInto[6]; a11 += sumInto[7]; a12 += sumInto[8]; a13 += sumInto[9]; a14 += sumInto[10]; a15 += sumInto[11];
            a20 += sumInto[12]; a21 += sumInto[13]; a22 += sumInto[14]; a23 += sumInto[15]; a24 += sumInto[16]; a25 += sumInto[17];
            a30 += sumInto[18]; a31 += sumInto[19]; a32 += sumInto[20]; a33 += sumInto[21]; a34 += sumInto[22]; a35 += sumInto[23];
            acc = sumInto;
        }
        StoreTile(acc, a00, a01, a02, a03, a04, a05, a10, a11, a12, a13, a14, a15, a20, a21, a22, a23, a24, a25, a30, a31, a32, a33, a34, a35);
    }

    /// <summary>acc[r·6 + j] = a_rj.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void StoreTile(Vector512<float>* acc,
        Vector512<float> a00, Vector512<float> a01, Vector512<float> a02, Vector512<float> a03, Vector512<float> a04, Vector512<float> a05,
        Vector512<float> a10, Vector512<float> a11, Vector512<float> a12, Vector512<float> a13, Vector512<float> a14, Vector512<float> a15,
        Vector512<float> a20, Vector512<float> a21, Vector512<float> a22, Vector512<float> a23, Vector512<float> a24, Vector512<float> a25,
        Vector512<float> a30, Vector512<float> a31, Vector512<float> a32, Vector512<float> a33, Vector512<float> a34, Vector512<float> a35)
    {
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
        /// <summary>Bytes per stored element.</summary>
        static abstract int Size { get; }

        static abstract Vector512<float> Load(byte* row, int k);
    }

    struct F32Rows : IRows
    {
        public static int Size => 4;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector512<float> Load(byte* row, int k) => Vector512.Load((float*)row + k);
    }

    /// <summary>BF16 is the top half of an F32: zero-extend 16 values to 32 bits and shift them up.</summary>
    struct Bf16Rows : IRows
    {
        public static int Size => 2;

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
