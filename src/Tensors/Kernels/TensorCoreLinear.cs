using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Runtime;

namespace LoraEngine.Tensors.Kernels;

/// <summary>Sixteen bytes: eight BF16 weights, read with one <c>ld.global.v4</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct U4
{
    public uint X, Y, Z, W;
}

/// <summary>Four F32 activations, read with one <c>ld.global.v4</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct F4
{
    public float X, Y, Z, W;
}

/// <summary>Up to three linears sharing one input (q/k/v, gate/up) in one launch: y_s = W_s · x.</summary>
internal struct LinearSegments
{
    public ArrayView<float> Y0, Y1, Y2;   // [tokens, n_s] F32
    public ArrayView<U4> W0, W1, W2;      // [n_s, k] BF16 as 16-byte units
    public long A0, A1, A2;               // their device addresses (cp.async reads them without a view)
    public int N0, N1, N2;
    public int End0, End1;                // blockIdx.x where segment 1 and segment 2 begin
}

/// <summary>
/// y[t, o] = Σ_k W[o, k] · x[t, k] on the tensor cores (<c>mma.sync.m16n8k16</c>, BF16 × BF16 → F32) for BF16 weights,
/// any token count. "Swap AB": the weight is the MMA's A operand (16 output rows), tokens are its N (8 per tile), so a
/// decode step of one token streams each weight once, 16 bytes per load. The F32 activation is split into three BF16
/// parts, x ≈ hi + mid + lo to ~2⁻²⁶ relative (two parts, ~2⁻¹⁷, missed F32 results by 3e-4 relative where a dot product
/// cancels), each multiplied against the same weight fragment: F32-grade accuracy from BF16 products, which are exact
/// in the F32 accumulator.
///
/// Parallelisation: a group of 8 warps owns 16 output rows × 32 tokens; warp w takes the 32-wide k chunks w, w+8, …
/// (two at a time, both chunks' loads issued before the first MMA) and the eight partial sums are added in shared memory
/// in warp order. (16 warps with four chunks in flight measured slower on the H200: 119 registers, one group per SM.)
/// The k order inside a thread, the chunk split and the final order depend on K only — never on the token count — and
/// every output column of an MMA depends only on its own token, so a token's result is bit-identical whatever batch or
/// tile it is in. Up to 8 tokens take a build of this kernel compiled for one token tile (fewer registers, more groups
/// per SM); more tokens take <see cref="RowKernel"/>, which computes the same sums in the same order with the work split
/// by rows (and, for smaller linears, by slice of k), and large prefills <see cref="TileKernel"/> (128 rows × 64 tokens
/// a group), so which kernel runs never changes a result. The kernels load through <see cref="PtxKernels"/>.
///
/// Within a chunk the k index is permuted so that each thread's fragment is one 16-byte load: lane (g, t) holds
/// physical k 8t..8t+3 for the first MMA and 8t+4..8t+7 for the second; A and B use the same map, so the dot product
/// is unchanged.
/// </summary>
internal sealed partial class TensorCoreLinear : IDisposable
{
    const int Warps = 8;
    const int RowsPerGroup = 16;
    const int TokensPerGroup = 32; // four n-tiles of 8
    const int ChunkK = 32;

    const int RowWarps = 4;         // the row-split kernel: a group of 4 warps, one 16-row block each
    const int Slices = Warps;       // k chunks c ≡ s (mod 8) form slice s: its own accumulator, slices added in order
    const int TilePartialF4s = RowWarps * 32 * 4;  // one slice's partial sums of a 64-row × 32-token tile, as F4
    const int SliceTiles = 512;     // output tiles the slice workspace holds: ≥ the 3 per SM where rows take over, up to 170 SMs
    const int RingDepth = 4;        // each thread's weight ring (cp.async): a chunk multiplied, three copying

    /// <summary>Device bytes of the slice workspace each CUDA device allocates (the memory plan counts them).</summary>
    public const long WorkspaceBytes = SliceTiles * (Slices * TilePartialF4s * 16L + sizeof(int));

    readonly ComputeDevice _device;
    readonly Action<AcceleratorStream, KernelConfig, ArrayView<F4>, LinearSegments, int, int> _kernel, _kernelOneTile, _tileKernel;
    readonly Action<AcceleratorStream, KernelConfig, ArrayView<F4>, LinearSegments, int, int, int, ArrayView<F4>, ArrayView<int>> _rowKernel;

    // The slice-split row kernel's workspace: each group's partial sums (64 rows × 32 tokens per slice) and, per output
    // tile, how many of its slices have arrived (the last one adds them and sets the count back to 0).
    readonly MemoryBuffer1D<F4, Stride1D.Dense> _partials;
    readonly MemoryBuffer1D<int, Stride1D.Dense> _arrivals;

    /// <summary>The token tiles (of 8) a split-k group computes: a compile-time bound, so a decode kernel keeps no registers for tiles it never has.</summary>
    interface ITiles
    {
        int Max { get; }
    }

    struct OneTile : ITiles
    {
        public readonly int Max => 1;
    }

    struct FourTiles : ITiles
    {
        public readonly int Max => 4;
    }

    TensorCoreLinear(ComputeDevice device, bool emulated)
    {
        _device = device;
        (_kernel, _kernelOneTile, _rowKernel, _tileKernel) = emulated ? Load<EmulatedOps>(device.Accelerator) : Load<PtxOps>(device.Accelerator);
        _partials = device.Accelerator.Allocate1D<F4>((long)SliceTiles * Slices * TilePartialF4s);
        _arrivals = device.Accelerator.Allocate1D<int>(SliceTiles);
        _arrivals.MemSetToZero(device.Stream); // on the stream the kernels run on: ordered before the first of them
    }

    /// <summary>The kernels built on one implementation of the MMA: four tiles, one tile (split-k), rows, tiles (prefill).</summary>
    static (Action<AcceleratorStream, KernelConfig, ArrayView<F4>, LinearSegments, int, int> FourTiles,
        Action<AcceleratorStream, KernelConfig, ArrayView<F4>, LinearSegments, int, int> OneTile,
        Action<AcceleratorStream, KernelConfig, ArrayView<F4>, LinearSegments, int, int, int, ArrayView<F4>, ArrayView<int>> Rows,
        Action<AcceleratorStream, KernelConfig, ArrayView<F4>, LinearSegments, int, int> Tiles)
        Load<TOps>(Accelerator acc) where TOps : struct, ITensorCoreOps =>
        (PtxKernels.Load<Action<AcceleratorStream, KernelConfig, ArrayView<F4>, LinearSegments, int, int>>(acc, Kernel<FourTiles, TOps>),
         PtxKernels.Load<Action<AcceleratorStream, KernelConfig, ArrayView<F4>, LinearSegments, int, int>>(acc, Kernel<OneTile, TOps>),
         PtxKernels.Load<Action<AcceleratorStream, KernelConfig, ArrayView<F4>, LinearSegments, int, int, int, ArrayView<F4>, ArrayView<int>>>(acc, RowKernel<TOps>),
         PtxKernels.Load<Action<AcceleratorStream, KernelConfig, ArrayView<F4>, LinearSegments, int, int>>(acc, TileKernel<TOps>, TileWarps * 32, 2));

    /// <summary>Frees the slice workspace (the device disposes its families).</summary>
    public void Dispose()
    {
        _partials.Dispose();
        _arrivals.Dispose();
    }

    /// <summary>
    /// Which kernel <see cref="Launch"/> takes: chosen by shape (default), or one forced (benchmarks, tests). SplitSlices
    /// is the row-split kernel with each k slice in a group of its own, the slices' partial sums added by the last to finish.
    /// </summary>
    internal enum Kernels { Auto, SplitK, SplitRows, SplitSlices, Tiles }

    /// <summary>Forces one kernel for every launch (all give the same bits; a benchmark times each).</summary>
    internal Kernels Choice { get; set; }

    /// <summary>
    /// Up to 8 tokens: split-k (one tile; the others are slower there). More: the row-split kernel, which shares each
    /// activation chunk among 64 output rows through shared memory, walking all of k once there are at least three of its
    /// groups per SM, and with the 8 slices of k in groups of their own below that. H100, 32 tokens, split-k / rows /
    /// slices in µs: lm_head 128256×2048 545 / 396 / 396, 8B gate/up 28672×4096 270 / 197 / 201; 1B q/k/v 3072×2048
    /// 20.4 / 55.2 / 14.7, 1B gate/up 16384×2048 79.8 / 87.5 / 70.0, 1B down 2048×8192 59.2 / 290 / 45.4, 8B o 4096×4096
    /// 39.7 / 151 / 29.9 (before the row kernel's weights went through a cp.async ring, which took 32-token linears 10–28 %
    /// further: lm_head 391.8 → 351.2, 1B down 48.3 → 35.0). A forced SplitSlices takes SplitRows where the output tiles
    /// exceed the workspace. More than 64 tokens with at least two waves of tile groups (<see cref="TileGroups"/>): the
    /// tile kernel (H100, 4096×4096 at 2048 tokens: 0.957 ms against the row kernel's 1.305).
    /// </summary>
    Kernels Pick(int tokens, int rowGroups)
    {
        long outputTiles = (long)rowGroups * ((tokens + TokensPerGroup - 1) / TokensPerGroup);
        var pick = Choice != Kernels.Auto ? Choice
            : tokens <= 8 ? Kernels.SplitK
            : tokens > TileTokens && TileGroups(tokens, rowGroups) >= 4L * _device.Accelerator.NumMultiprocessors ? Kernels.Tiles
            : outputTiles >= 3L * _device.Accelerator.NumMultiprocessors ? Kernels.SplitRows
            : Kernels.SplitSlices;
        return pick == Kernels.SplitSlices && outputTiles > SliceTiles ? Kernels.SplitRows : pick;
    }

    /// <summary>The tensor-core linear of a CUDA device; null elsewhere (no inline PTX there).</summary>
    public static TensorCoreLinear? TryCreate(ComputeDevice device) => device.Kind == DeviceKind.Cuda ? new TensorCoreLinear(device, emulated: false) : null;

    /// <summary>
    /// The same kernels with the MMA emulated in plain C# (<see cref="EmulatedOps"/>), for ILGPU's CPU accelerator: tests
    /// of the kernels' logic without a GPU. Never chosen by a device (seconds per launch at model sizes).
    /// </summary>
    internal static TensorCoreLinear CreateEmulated(ComputeDevice device)
    {
        if (device.Accelerator is not ILGPU.Runtime.CPU.CPUAccelerator)
            throw new ArgumentException($"the emulated tensor-core kernels run on ILGPU's CPU accelerator, not on {device}", nameof(device));
        return new TensorCoreLinear(device, emulated: true);
    }

    /// <summary>Whether (x, w) fit this kernel: BF16 weights, K a multiple of 8, 16-byte aligned rows.</summary>
    public static bool Supports(DeviceTensor x, DeviceTensor w) =>
        w.DType == DType.BF16 && w.Dim(1) % 8 == 0 && w.ElementOffset % 8 == 0 && x.ElementOffset % 4 == 0;

    /// <summary>y_i = W_i · x for up to three (y_i, W_i) sharing x [tokens, k]; one launch.</summary>
    public void Launch(DeviceTensor x, ReadOnlySpan<(DeviceTensor Y, DeviceTensor W)> outputs)
    {
        int tokens = x.Dim(0), k = x.Dim(1);
        int rowGroups = 0;
        foreach (var (_, w) in outputs) rowGroups += (w.Dim(0) + RowWarps * RowsPerGroup - 1) / (RowWarps * RowsPerGroup);
        var kernel = Pick(tokens, rowGroups);
        bool rows = kernel is Kernels.SplitRows or Kernels.SplitSlices;
        int rowsPerGroup = kernel == Kernels.Tiles ? TileRows : rows ? RowWarps * RowsPerGroup : RowsPerGroup;
        var seg = new LinearSegments();
        int blocks = 0;
        for (int i = 0; i < outputs.Length; i++)
        {
            var (y, w) = outputs[i];
            int n = w.Dim(0);
            var wv = w.U16.Cast<U4>();
            switch (i)
            {
                case 0: seg.Y0 = y.F32; seg.W0 = wv; seg.A0 = Address(wv); seg.N0 = n; break;
                case 1: seg.Y1 = y.F32; seg.W1 = wv; seg.A1 = Address(wv); seg.N1 = n; break;
                default: seg.Y2 = y.F32; seg.W2 = wv; seg.A2 = Address(wv); seg.N2 = n; break;
            }
            blocks += (n + rowsPerGroup - 1) / rowsPerGroup;
            if (i == 0) seg.End0 = seg.End1 = blocks;
            if (i == 1) seg.End1 = blocks;
        }
        // Unused segments alias segment 0 (never selected: their block range is empty).
        if (outputs.Length < 2) { seg.Y1 = seg.Y0; seg.W1 = seg.W0; seg.A1 = seg.A0; }
        if (outputs.Length < 3) { seg.Y2 = seg.Y0; seg.W2 = seg.W0; seg.A2 = seg.A0; }
        int tokenTiles = (tokens + TokensPerGroup - 1) / TokensPerGroup;
        if (rows)
        {
            int slices = kernel == Kernels.SplitSlices ? Slices : 1;
            _rowKernel(_device.Stream, new KernelConfig(new Index2D(blocks * slices, tokenTiles), new Index2D(RowWarps * 32, 1)),
                x.F32.Cast<F4>(), seg, tokens, k, slices, _partials.View, _arrivals.View);
        }
        else if (kernel == Kernels.Tiles)
            _tileKernel(_device.Stream, new KernelConfig(new Index2D(blocks, (tokens + TileTokens - 1) / TileTokens), new Index2D(TileWarps * 32, 1)),
                x.F32.Cast<F4>(), seg, tokens, k);
        else (tokens <= 8 ? _kernelOneTile : _kernel)(_device.Stream, new KernelConfig(new Index2D(blocks, tokenTiles), new Index2D(Warps * 32, 1)), x.F32.Cast<F4>(), seg, tokens, k);
    }

    static void Kernel<TTiles, TOps>(ArrayView<F4> x, LinearSegments seg, int tokens, int k) where TTiles : struct, ITiles where TOps : struct, ITensorCoreOps
    {
        var partial = SharedMemory.Allocate<float>(Warps * 16 * 32);

        // Which linear this group serves, and its 16 rows.
        int bx = Select(seg, Grid.IdxX, out var w, out long _, out var y, out int n);

        int warp = Warp.WarpIdx, lane = Warp.LaneIdx;
        int g = lane >> 2, t = lane & 3;
        int rowA = bx * RowsPerGroup + g, rowB = rowA + 8;
        int tok0 = Grid.IdxY * TokensPerGroup;
        int tiles = (tokens - tok0 + 7) / 8;
        if (tiles > 4) tiles = 4;
        int units = k / 8;                       // 16-byte units per row
        int chunks = (k + ChunkK - 1) / ChunkK;
        long baseA = (long)rowA * units, baseB = (long)rowB * units;
        bool okA = rowA < n, okB = rowB < n;

        float c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
        float c20 = 0, c21 = 0, c22 = 0, c23 = 0, c30 = 0, c31 = 0, c32 = 0, c33 = 0;

        long xRow = (long)(tok0 + g) * (units * 2);
        bool tokOk = tok0 + g < tokens;
        // Warp w multiplies chunks w, w + 8, … two at a time, both requested into registers before either is used (a
        // cp.async ring three chunks deep made one-token linears slower: H100, 1B down 22.0 → 29.0 µs, o 8.7 → 10.2;
        // only lm_head gained, 214.7 → 195.6).
        for (int c = warp; c < chunks; c += 2 * Warps)
        {
            int u0 = c * 4 + t, u1 = u0 + 4 * Warps;
            var k0 = LoadChunk(w, x, baseA, baseB, okA, okB, u0, units, xRow, tokOk);
            var k1 = LoadChunk(w, x, baseA, baseB, okA, okB, u1, units, xRow, tokOk);
            Chunk<TTiles, TOps>(x, k0, u0, units, tok0 + g, tokens, tiles, ref c00, ref c01, ref c02, ref c03, ref c10, ref c11, ref c12, ref c13,
                ref c20, ref c21, ref c22, ref c23, ref c30, ref c31, ref c32, ref c33);
            if (u1 - t >= units) continue;
            Chunk<TTiles, TOps>(x, k1, u1, units, tok0 + g, tokens, tiles, ref c00, ref c01, ref c02, ref c03, ref c10, ref c11, ref c12, ref c13,
                ref c20, ref c21, ref c22, ref c23, ref c30, ref c31, ref c32, ref c33);
        }

        // Sum the warps' partials in warp order; warp 0 stores.
        int p = (warp * 32 + lane) * 16;
        partial[p + 0] = c00; partial[p + 1] = c01; partial[p + 2] = c02; partial[p + 3] = c03;
        partial[p + 4] = c10; partial[p + 5] = c11; partial[p + 6] = c12; partial[p + 7] = c13;
        partial[p + 8] = c20; partial[p + 9] = c21; partial[p + 10] = c22; partial[p + 11] = c23;
        partial[p + 12] = c30; partial[p + 13] = c31; partial[p + 14] = c32; partial[p + 15] = c33;
        Group.Barrier();
        if (warp != 0) return;
        for (int j = 0; j < tiles; j++)
        {
            float d0 = 0, d1 = 0, d2 = 0, d3 = 0;
            for (int v = 0; v < Warps; v++)
            {
                int q = (v * 32 + lane) * 16 + j * 4;
                d0 += partial[q];
                d1 += partial[q + 1];
                d2 += partial[q + 2];
                d3 += partial[q + 3];
            }
            int ta = tok0 + j * 8 + 2 * t, tb = ta + 1;
            Store(y, n, tokens, ta, rowA, d0);
            Store(y, n, tokens, tb, rowA, d1);
            Store(y, n, tokens, ta, rowB, d2);
            Store(y, n, tokens, tb, rowB, d3);
        }
    }

    /// <summary>
    /// The same products as <see cref="Kernel{TTiles, TOps}"/>, bit for bit, with the work split by rows instead of k: a group of 4 warps
    /// owns 64 output rows × 32 tokens, and every warp walks all k chunks in the split-k kernel's order — slice s (the chunks
    /// c ≡ s mod 8, the split-k kernel's warp s) in ascending c into one accumulator, added to a running total after each
    /// slice, as the split-k kernel adds its warps' sums in warp order. Each chunk's 32 × 32 activations are split into
    /// hi/mid/lo once per group, into shared memory in fragment order (double-buffered, one barrier a chunk), and read by the
    /// 4 warps: a group's activation traffic is a quarter of the split-k kernel's per row, which bounded 32-token linears by
    /// L2 bandwidth (lm_head at 32 tokens re-read ~2 GB of activations for 0.5 GB of weights).
    ///
    /// With <paramref name="slices"/> = 8 (<see cref="Kernels.SplitSlices"/>) each group walks one slice only, so a linear
    /// with few row groups still fills the GPU; each slice's sums go to <paramref name="partials"/> and the last of a tile's 8 groups to
    /// arrive (counted in <paramref name="arrivals"/>) adds them in slice order, the same additions as the running total.
    /// </summary>
    static void RowKernel<TOps>(ArrayView<F4> x, LinearSegments seg, int tokens, int k, int slices, ArrayView<F4> partials, ArrayView<int> arrivals)
        where TOps : struct, ITensorCoreOps
    {
        // The weights' ring comes first: FirstSharedAddress names the kernel's first shared allocation.
        var ring = SharedMemory.Allocate<U4>(RingDepth * 2 * RowWarps * 32); // [slot][row g, row g+8][thread]: each thread's own
        var stage = SharedMemory.Allocate<U4>(2 * 3 * 4 * 32); // [buffer][hi, mid, lo][tile][lane]
        var arrived = SharedMemory.Allocate<int>(1);
        uint ringAddress = default(TOps).FirstSharedAddress();

        // The slices of one row block are neighbours in the grid, so the groups reading one stretch of each weight row run
        // together (H100, 32 tokens: 1B gate/up 70.0 µs vs 73.2 with the slice as the grid's slowest index, 1B down 45.4 vs 49.6).
        bool sliced = slices > 1;
        int block = Grid.IdxX / slices, tile = Grid.IdxY * (Grid.DimX / slices) + block;
        int bx = Select(seg, block, out var w, out long wAddress, out var y, out int n);

        int warp = Warp.WarpIdx, lane = Warp.LaneIdx;
        int g = lane >> 2, t = lane & 3;
        int rowA = (bx * RowWarps + warp) * RowsPerGroup + g, rowB = rowA + 8;
        int tok0 = Grid.IdxY * TokensPerGroup;
        int tiles = (tokens - tok0 + 7) / 8;
        if (tiles > 4) tiles = 4;
        int units = k / 8;
        int chunks = (k + ChunkK - 1) / ChunkK;
        long baseA = (long)rowA * units, baseB = (long)rowB * units;
        bool okA = rowA < n, okB = rowB < n;

        // Thread i stages unit (i & 3) of the chunk for token i >> 2 of the group: it becomes tile (i >> 5), lane ((i >> 2) & 7) * 4 + (i & 3).
        int i = Group.IdxX;
        int sToken = tok0 + (i >> 2), sUnit = i & 3, sAt = (i >> 5) * 32 + ((i >> 2) & 7) * 4 + sUnit;
        long sRow = (long)sToken * (units * 2);
        bool sOk = sToken < tokens;

        // The slices this group walks: all, or one alone (its partial sums to the workspace).
        int sFirst = sliced ? Grid.IdxX % slices : 0, sEnd = sliced ? sFirst + 1 : Slices;

        // Chunks in slice order: (s, c) now, (s1, c1) next. Each thread copies its own weights (rows g and g+8, one
        // 16-byte unit each) with cp.async into a ring of RingDepth slots, three chunks ahead of the one it multiplies:
        // more bytes in flight than registers could hold (two chunks ahead in registers bounded 32-token linears to
        // ~0.3 of copy bandwidth), and as the thread reads back only what it copied, no barrier guards the ring.
        // Activations are staged one chunk ahead (L2 hits, shared by the group). A slice without chunks (k < 8 chunks)
        // multiplies zeros once: its partial sum is 0.
        int s = sFirst, c = sFirst;
        Stage<TOps>(x, stage, 0, sAt, sRow, sOk, c * 4 + sUnit, units);
        int sIssue = s, cIssue = c, slot = 0;
        CopyWeights<TOps>(ring, 0, ringAddress, w, wAddress, baseA, baseB, okA, okB, sIssue < sEnd && cIssue < chunks, cIssue * 4 + t, units);
        Advance(ref sIssue, ref cIssue, chunks);
        CopyWeights<TOps>(ring, 1, ringAddress, w, wAddress, baseA, baseB, okA, okB, sIssue < sEnd && cIssue < chunks, cIssue * 4 + t, units);
        Advance(ref sIssue, ref cIssue, chunks);
        CopyWeights<TOps>(ring, 2, ringAddress, w, wAddress, baseA, baseB, okA, okB, sIssue < sEnd && cIssue < chunks, cIssue * 4 + t, units);
        Advance(ref sIssue, ref cIssue, chunks);
        int s1 = s, c1 = c;
        Advance(ref s1, ref c1, chunks);
        Group.Barrier();

        float c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
        float c20 = 0, c21 = 0, c22 = 0, c23 = 0, c30 = 0, c31 = 0, c32 = 0, c33 = 0;
        float d00 = 0, d01 = 0, d02 = 0, d03 = 0, d10 = 0, d11 = 0, d12 = 0, d13 = 0;
        float d20 = 0, d21 = 0, d22 = 0, d23 = 0, d30 = 0, d31 = 0, d32 = 0, d33 = 0;
        int buffer = 0;
        while (true)
        {
            CopyWeights<TOps>(ring, (slot + RingDepth - 1) % RingDepth, ringAddress, w, wAddress, baseA, baseB, okA, okB,
                sIssue < sEnd && cIssue < chunks, cIssue * 4 + t, units);
            Advance(ref sIssue, ref cIssue, chunks);
            bool more = s1 < sEnd && c1 < chunks;
            F4 x0 = default, x1 = default;
            int sU = c1 * 4 + sUnit;
            if (more && sOk && sU < units)
            {
                x0 = x[sRow + sU * 2];
                x1 = x[sRow + sU * 2 + 1];
            }
            default(TOps).WaitCopies(); // this chunk's copies (three newer groups may still be in flight)
            var a = ring[slot * 2 * 128 + i];
            var b = ring[(slot * 2 + 1) * 128 + i];
            slot = (slot + 1) % RingDepth;

            int at = buffer * 3 * 128 + lane;
            MmaSplit<TOps>(a, b, stage[at], stage[at + 128], stage[at + 256], ref c00, ref c01, ref c02, ref c03);
            if (tiles > 1) MmaSplit<TOps>(a, b, stage[at + 32], stage[at + 160], stage[at + 288], ref c10, ref c11, ref c12, ref c13);
            if (tiles > 2) MmaSplit<TOps>(a, b, stage[at + 64], stage[at + 192], stage[at + 320], ref c20, ref c21, ref c22, ref c23);
            if (tiles > 3) MmaSplit<TOps>(a, b, stage[at + 96], stage[at + 224], stage[at + 352], ref c30, ref c31, ref c32, ref c33);

            if (s1 != s)
            {
                // Slice s is complete: the total takes its sum, as the split-k kernel adds warp s's partial.
                d00 += c00; d01 += c01; d02 += c02; d03 += c03; d10 += c10; d11 += c11; d12 += c12; d13 += c13;
                d20 += c20; d21 += c21; d22 += c22; d23 += c23; d30 += c30; d31 += c31; d32 += c32; d33 += c33;
                c00 = c01 = c02 = c03 = c10 = c11 = c12 = c13 = 0;
                c20 = c21 = c22 = c23 = c30 = c31 = c32 = c33 = 0;
            }
            if (!more) break;

            // Everyone finished reading the other buffer a chunk ago (the barrier below), so it can take the next chunk.
            buffer ^= 1;
            StageSplit<TOps>(stage, buffer, sAt, x0, x1);
            Group.Barrier();
            (s, c) = (s1, c1);
            Advance(ref s1, ref c1, chunks);
        }

        if (sliced)
        {
            // This slice's sums go to the workspace; the tile's last slice to arrive adds all eight in slice order
            // (0 + p0 + p1 + … + p7, as the split-k kernel adds its warps' partials) and stores them.
            long at = ((long)tile * Slices + sFirst) * TilePartialF4s + i;
            partials[at] = new F4 { X = d00, Y = d01, Z = d02, W = d03 };
            partials[at + 128] = new F4 { X = d10, Y = d11, Z = d12, W = d13 };
            partials[at + 256] = new F4 { X = d20, Y = d21, Z = d22, W = d23 };
            partials[at + 384] = new F4 { X = d30, Y = d31, Z = d32, W = d33 };
            MemoryFence.DeviceLevel(); // each thread's partials are visible before the group counts itself in
            Group.Barrier();
            if (i == 0)
            {
                arrived[0] = Atomic.Add(ref arrivals[tile], 1);
                MemoryFence.DeviceLevel(); // the others' partials, seen through the count, before the group reads them
            }
            Group.Barrier();
            if (arrived[0] != Slices - 1) return;
            if (i == 0) arrivals[tile] = 0; // ready for the next launch
            d00 = d01 = d02 = d03 = d10 = d11 = d12 = d13 = 0;
            d20 = d21 = d22 = d23 = d30 = d31 = d32 = d33 = 0;
            for (int v = 0; v < Slices; v++)
            {
                long from = ((long)tile * Slices + v) * TilePartialF4s + i;
                var p0 = partials[from];
                var p1 = partials[from + 128];
                var p2 = partials[from + 256];
                var p3 = partials[from + 384];
                d00 += p0.X; d01 += p0.Y; d02 += p0.Z; d03 += p0.W;
                d10 += p1.X; d11 += p1.Y; d12 += p1.Z; d13 += p1.W;
                d20 += p2.X; d21 += p2.Y; d22 += p2.Z; d23 += p2.W;
                d30 += p3.X; d31 += p3.Y; d32 += p3.Z; d33 += p3.W;
            }
        }

        int ta = tok0 + 2 * t, tb = ta + 1;
        StoreTile(y, n, tokens, ta, tb, rowA, rowB, d00, d01, d02, d03);
        StoreTile(y, n, tokens, ta + 8, tb + 8, rowA, rowB, d10, d11, d12, d13);
        StoreTile(y, n, tokens, ta + 16, tb + 16, rowA, rowB, d20, d21, d22, d23);
        StoreTile(y, n, tokens, ta + 24, tb + 24, rowA, rowB, d30, d31, d32, d33);
    }

    /// <summary>The chunk after (s, c) in slice order: c + 8 in the same slice, else the first chunk of the next slice.</summary>
    static void Advance(ref int s, ref int c, int chunks)
    {
        c += Slices;
        if (c < chunks) return;
        s++;
        c = s;
    }

    /// <summary>
    /// A thread's weights of one chunk — 16-byte unit <paramref name="unit"/> of rows g and g+8, zeros past k or n or past
    /// the last chunk — copied asynchronously into ring slot <paramref name="slot"/>, as one group.
    /// </summary>
    static void CopyWeights<TOps>(ArrayView<U4> ring, int slot, uint ringAddress, ArrayView<U4> w, long wAddress, long baseA, long baseB,
        bool okA, bool okB, bool chunk, int unit, int units) where TOps : struct, ITensorCoreOps
    {
        int threads = Group.DimX, at = slot * 2 * threads + Group.IdxX;
        bool ok = chunk && unit < units;
        default(TOps).CopyAsync(ring, at, ringAddress, w, baseA + unit, wAddress, ok && okA);
        default(TOps).CopyAsync(ring, at + threads, ringAddress, w, baseB + unit, wAddress, ok && okB);
        default(TOps).CommitCopies();
    }

    /// <summary>Loads and splits the first chunk's unit of this thread into buffer 0.</summary>
    static void Stage<TOps>(ArrayView<F4> x, ArrayView<U4> stage, int buffer, int sAt, long sRow, bool sOk, int unit, int units) where TOps : struct, ITensorCoreOps
    {
        F4 x0 = default, x1 = default;
        if (sOk && unit < units)
        {
            x0 = x[sRow + unit * 2];
            x1 = x[sRow + unit * 2 + 1];
        }
        StageSplit<TOps>(stage, buffer, sAt, x0, x1);
    }

    /// <summary>Writes 8 activations as hi, mid and lo fragments (the pairs the split-k kernel's lane forms from the same values).</summary>
    static void StageSplit<TOps>(ArrayView<U4> stage, int buffer, int sAt, F4 x0, F4 x1) where TOps : struct, ITensorCoreOps
    {
        SplitUnit<TOps>(x0, x1, out var hi, out var mid, out var lo);
        int at = buffer * 3 * 128 + sAt;
        stage[at] = hi;
        stage[at + 128] = mid;
        stage[at + 256] = lo;
    }

    static void StoreTile(ArrayView<float> y, int n, int tokens, int ta, int tb, int rowA, int rowB, float d0, float d1, float d2, float d3)
    {
        Store(y, n, tokens, ta, rowA, d0);
        Store(y, n, tokens, tb, rowA, d1);
        Store(y, n, tokens, ta, rowB, d2);
        Store(y, n, tokens, tb, rowB, d3);
    }

    /// <summary>The linear group <paramref name="block"/> serves (its weight and its address, output and rows) and its block within that linear.</summary>
    static int Select(LinearSegments seg, int block, out ArrayView<U4> w, out long address, out ArrayView<float> y, out int n)
    {
        if (block >= seg.End1)
        {
            (w, address, y, n) = (seg.W2, seg.A2, seg.Y2, seg.N2);
            return block - seg.End1;
        }
        if (block >= seg.End0)
        {
            (w, address, y, n) = (seg.W1, seg.A1, seg.Y1, seg.N1);
            return block - seg.End0;
        }
        (w, address, y, n) = (seg.W0, seg.A0, seg.Y0, seg.N0);
        return block;
    }

    /// <summary>The device address of a view's first element (the CPU accelerator's is a host address, which its ops never read).</summary>
    static long Address(ArrayView<U4> view) => view.LoadEffectiveAddressAsPtr().ToInt64();

    /// <summary>A lane's share of one 32-wide k chunk: rows g and g+8 of the weight, and its first tile's token.</summary>
    struct ChunkData
    {
        public U4 A, B;
        public F4 X0, X1;
    }

    static ChunkData LoadChunk(ArrayView<U4> w, ArrayView<F4> x, long baseA, long baseB, bool okA, bool okB, int unit, int units, long xRow, bool tokOk)
    {
        var c = default(ChunkData);
        if (unit >= units) return c; // past the end of k: zeros add nothing
        if (okA) c.A = w[baseA + unit];
        if (okB) c.B = w[baseB + unit];
        if (tokOk)
        {
            c.X0 = x[xRow + unit * 2];
            c.X1 = x[xRow + unit * 2 + 1];
        }
        return c;
    }

    /// <summary>
    /// One chunk against every tile of tokens: the first tile's activations came with the chunk, the others are loaded
    /// here, one tile at a time. (Requesting all tiles' activations before the first MMA took the kernel from 75 to 93
    /// registers and made 32-token linears slower on the H200: 1B gate/up 78 → 88 µs, 8B q/k/v 51 → 72 µs.)
    /// </summary>
    static void Chunk<TTiles, TOps>(ArrayView<F4> x, ChunkData k, int unit, int units, int token, int tokens, int tiles,
        ref float c00, ref float c01, ref float c02, ref float c03, ref float c10, ref float c11, ref float c12, ref float c13,
        ref float c20, ref float c21, ref float c22, ref float c23, ref float c30, ref float c31, ref float c32, ref float c33)
        where TTiles : struct, ITiles where TOps : struct, ITensorCoreOps
    {
        Mma<TOps>(k.A, k.B, k.X0, k.X1, ref c00, ref c01, ref c02, ref c03);
        if (default(TTiles).Max == 1) return;
        if (tiles > 1) Tile<TOps>(x, k.A, k.B, unit, units, token + 8, tokens, ref c10, ref c11, ref c12, ref c13);
        if (tiles > 2) Tile<TOps>(x, k.A, k.B, unit, units, token + 16, tokens, ref c20, ref c21, ref c22, ref c23);
        if (tiles > 3) Tile<TOps>(x, k.A, k.B, unit, units, token + 24, tokens, ref c30, ref c31, ref c32, ref c33);
    }

    /// <summary>One n-tile (8 tokens) × one 32-wide k chunk: six MMAs (two k16 halves × hi/mid/lo); a, b: rows g and g+8.</summary>
    static void Tile<TOps>(ArrayView<F4> x, U4 a, U4 b, int unit, int units, int token, int tokens,
        ref float d0, ref float d1, ref float d2, ref float d3) where TOps : struct, ITensorCoreOps
    {
        F4 x0 = default, x1 = default;
        if (token < tokens && unit < units)
        {
            long i = (long)token * (units * 2) + unit * 2;
            x0 = x[i];
            x1 = x[i + 1];
        }
        Mma<TOps>(a, b, x0, x1, ref d0, ref d1, ref d2, ref d3);
    }

    /// <summary>The six MMAs of a chunk for one tile: a, b are rows g and g+8; x0, x1 the lane's 8 activations.</summary>
    static void Mma<TOps>(U4 a, U4 b, F4 x0, F4 x1, ref float d0, ref float d1, ref float d2, ref float d3) where TOps : struct, ITensorCoreOps
    {
        SplitUnit<TOps>(x0, x1, out var hi, out var mid, out var lo);
        MmaSplit<TOps>(a, b, hi, mid, lo, ref d0, ref d1, ref d2, ref d3);
    }

    /// <summary>
    /// The six MMAs of a chunk for one tile from split activations (x: k 0..3 of the lane's 8, the first k16 half; z, w:
    /// k 4..7, the second): hi, mid, lo against the first half of rows g and g+8, then against the second.
    /// </summary>
    static void MmaSplit<TOps>(U4 a, U4 b, U4 hi, U4 mid, U4 lo, ref float d0, ref float d1, ref float d2, ref float d3) where TOps : struct, ITensorCoreOps
    {
        // Fragment registers: a0 = row g, a1 = row g+8, a2 = row g (next pair), a3 = row g+8 (next pair).
        default(TOps).Mma(ref d0, ref d1, ref d2, ref d3, a.X, b.X, a.Y, b.Y, hi.X, hi.Y);
        default(TOps).Mma(ref d0, ref d1, ref d2, ref d3, a.X, b.X, a.Y, b.Y, mid.X, mid.Y);
        default(TOps).Mma(ref d0, ref d1, ref d2, ref d3, a.X, b.X, a.Y, b.Y, lo.X, lo.Y);
        default(TOps).Mma(ref d0, ref d1, ref d2, ref d3, a.Z, b.Z, a.W, b.W, hi.Z, hi.W);
        default(TOps).Mma(ref d0, ref d1, ref d2, ref d3, a.Z, b.Z, a.W, b.W, mid.Z, mid.W);
        default(TOps).Mma(ref d0, ref d1, ref d2, ref d3, a.Z, b.Z, a.W, b.W, lo.Z, lo.W);
    }

    /// <summary>A lane's 8 activations (one 16-byte unit of k) as hi, mid and lo BF16 fragments.</summary>
    static void SplitUnit<TOps>(F4 x0, F4 x1, out U4 hi, out U4 mid, out U4 lo) where TOps : struct, ITensorCoreOps
    {
        Split<TOps>(x0.X, x0.Y, out hi.X, out mid.X, out lo.X);
        Split<TOps>(x0.Z, x0.W, out hi.Y, out mid.Y, out lo.Y);
        Split<TOps>(x1.X, x1.Y, out hi.Z, out mid.Z, out lo.Z);
        Split<TOps>(x1.Z, x1.W, out hi.W, out mid.W, out lo.W);
    }

    /// <summary>Two F32 values as packed BF16 pairs (low half first): hi = bf16(v), mid = bf16(v − hi), lo = bf16(v − hi − mid).</summary>
    static void Split<TOps>(float v0, float v1, out uint hi, out uint mid, out uint lo) where TOps : struct, ITensorCoreOps
    {
        hi = default(TOps).PackBf16(v0, v1);
        float r0 = v0 - Interop.IntAsFloat(hi << 16), r1 = v1 - Interop.IntAsFloat(hi & 0xFFFF0000u);
        mid = default(TOps).PackBf16(r0, r1);
        lo = default(TOps).PackBf16(r0 - Interop.IntAsFloat(mid << 16), r1 - Interop.IntAsFloat(mid & 0xFFFF0000u));
    }

    static void Store(ArrayView<float> y, int n, int tokens, int token, int row, float v)
    {
        if (token < tokens && row < n) y[(long)token * n + row] = v;
    }
}
