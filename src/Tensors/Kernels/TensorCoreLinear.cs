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

/// <summary>
/// Up to four linears sharing one input in one launch: y_s = W_s · x (q/k/v, gate/up, and the LoRA slots' stacked A
/// beside them, <see cref="TensorCoreLinear.MaxSegments"/>).
/// </summary>
internal struct LinearSegments
{
    public ArrayView<float> Y0, Y1, Y2, Y3;   // [tokens, n_s] F32
    public ArrayView<U4> W0, W1, W2, W3;      // [n_s, k] BF16 as 16-byte units
    public long A0, A1, A2, A3;               // their device addresses (cp.async reads them without a view)
    public int N0, N1, N2, N3;
    public int End0, End1, End2;              // blockIdx.x where segments 1, 2 and 3 begin
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
/// a group; on Hopper its wgmma build), so which kernel runs never changes a result.
/// The kernels load through <see cref="PtxKernels"/>.
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
    const int WideWarps = 8;        // its wide build: two warpgroups, 128 rows
    const int Slices = Warps;       // k chunks c ≡ s (mod 8) form slice s: its own accumulator, slices added in order
    const int TilePartialF4s = RowWarps * 32 * 4;  // one slice's partial sums of a 64-row × 32-token tile, as F4
    const int SliceTiles = 512;     // output tiles the slice workspace holds: ≥ the 3 per SM where rows take over, up to 170 SMs
    const int RingDepth = 4;        // each thread's weight ring (cp.async): a chunk multiplied, three copying

    /// <summary>Device bytes of the slice workspace each CUDA device allocates (the memory plan counts them).</summary>
    public const long WorkspaceBytes = SliceTiles * (Slices * TilePartialF4s * 16L + sizeof(int));

    readonly ComputeDevice _device;
    readonly Action<AcceleratorStream, KernelConfig, ArrayView<F4>, LinearSegments, int, int> _kernel, _kernelOneTile, _kernelOneTileAhead, _tileKernel;
    readonly Action<AcceleratorStream, KernelConfig, ArrayView<F4>, LinearSegments, int, int, int, ArrayView<F4>, ArrayView<int>> _rowKernel;
    readonly Action<AcceleratorStream, KernelConfig, ArrayView<F4>, LinearSegments, int, int, int, ArrayView<F4>, ArrayView<int>>? _warpGroupRowKernel, _wideRowKernel;
    readonly Action<AcceleratorStream, KernelConfig, ArrayView<F4>, LinearSegments, int, int>? _warpGroupTileKernel;

    // The slice-split row kernel's workspace: each group's partial sums (64 rows × 32 tokens per slice) and, per output
    // tile, how many of its slices have arrived (the last one adds them and sets the count back to 0).
    readonly MemoryBuffer1D<F4, Stride1D.Dense> _partials;
    readonly MemoryBuffer1D<int, Stride1D.Dense> _arrivals;

    TensorCoreLinear(ComputeDevice device, bool emulated)
    {
        _device = device;
        (_kernel, _kernelOneTile, _kernelOneTileAhead, _rowKernel, _tileKernel) = emulated ? Load<EmulatedOps>(device) : Load<PtxOps>(device);
        // wgmma needs sm_90a: Hopper only (the emulated kernels run it anywhere).
        if (emulated)
        {
            _warpGroupRowKernel = PtxKernels.Load<Action<AcceleratorStream, KernelConfig, ArrayView<F4>, LinearSegments, int, int, int, ArrayView<F4>, ArrayView<int>>>(
                device, RowKernel<EmulatedOps, WarpGroupChunks>);
            _wideRowKernel = PtxKernels.Load<Action<AcceleratorStream, KernelConfig, ArrayView<F4>, LinearSegments, int, int, int, ArrayView<F4>, ArrayView<int>>>(
                device, RowKernel<EmulatedOps, WideWarpGroupChunks>);
            _warpGroupTileKernel = PtxKernels.Load<Action<AcceleratorStream, KernelConfig, ArrayView<F4>, LinearSegments, int, int>>(
                device, TileKernel<EmulatedOps, WarpGroupTileChunks>);
        }
        else if (device.Accelerator is ILGPU.Runtime.Cuda.CudaAccelerator { Architecture: { Major: 9, Minor: 0 } })
        {
            _warpGroupRowKernel = PtxKernels.Load<Action<AcceleratorStream, KernelConfig, ArrayView<F4>, LinearSegments, int, int, int, ArrayView<F4>, ArrayView<int>>>(
                device, RowKernel<PtxOps, WarpGroupChunks>, sm90a: true);
            // Three groups of 8 warps an SM (≤ 85 registers a thread): 24 warps, where five groups of the 4-warp build fit
            // (20). Since the activations are loaded two chunks ahead ptxas 12 gives 80 registers and 68 bytes of spills;
            // bounded to two groups (95 registers, no spills) it was no faster (H100: bs32 step 2.76 against 2.77–2.81 ms).
            _wideRowKernel = PtxKernels.Load<Action<AcceleratorStream, KernelConfig, ArrayView<F4>, LinearSegments, int, int, int, ArrayView<F4>, ArrayView<int>>>(
                device, RowKernel<PtxOps, WideWarpGroupChunks>, WideWarps * 32, 3, sm90a: true);
            _warpGroupTileKernel = PtxKernels.Load<Action<AcceleratorStream, KernelConfig, ArrayView<F4>, LinearSegments, int, int>>(
                device, TileKernel<PtxOps, WarpGroupTileChunks>, TileWarps * 32, 2, sm90a: true);
        }
        _partials = device.Accelerator.Allocate1D<F4>((long)SliceTiles * Slices * TilePartialF4s);
        _arrivals = device.Accelerator.Allocate1D<int>(SliceTiles);
        _arrivals.MemSetToZero(device.Stream); // on the stream the kernels run on: ordered before the first of them
    }

    /// <summary>The kernels built on one implementation of the MMA: four tiles, one tile (split-k, and a round ahead), rows, tiles (prefill).</summary>
    static (Action<AcceleratorStream, KernelConfig, ArrayView<F4>, LinearSegments, int, int> FourTiles,
        Action<AcceleratorStream, KernelConfig, ArrayView<F4>, LinearSegments, int, int> OneTile,
        Action<AcceleratorStream, KernelConfig, ArrayView<F4>, LinearSegments, int, int> OneTileAhead,
        Action<AcceleratorStream, KernelConfig, ArrayView<F4>, LinearSegments, int, int, int, ArrayView<F4>, ArrayView<int>> Rows,
        Action<AcceleratorStream, KernelConfig, ArrayView<F4>, LinearSegments, int, int> Tiles)
        Load<TOps>(ComputeDevice device) where TOps : struct, ITensorCoreOps =>
        (PtxKernels.Load<Action<AcceleratorStream, KernelConfig, ArrayView<F4>, LinearSegments, int, int>>(device, Kernel<FourTiles, TOps>),
         PtxKernels.Load<Action<AcceleratorStream, KernelConfig, ArrayView<F4>, LinearSegments, int, int>>(device, Kernel<OneTile, TOps>),
         PtxKernels.Load<Action<AcceleratorStream, KernelConfig, ArrayView<F4>, LinearSegments, int, int>>(device, Kernel<OneTileAhead, TOps>),
         PtxKernels.Load<Action<AcceleratorStream, KernelConfig, ArrayView<F4>, LinearSegments, int, int, int, ArrayView<F4>, ArrayView<int>>>(device, RowKernel<TOps, WarpChunks>),
         PtxKernels.Load<Action<AcceleratorStream, KernelConfig, ArrayView<F4>, LinearSegments, int, int>>(device, TileKernel<TOps, WarpTileChunks>, TileWarps * 32, 2));

    /// <summary>Frees the slice workspace (the device disposes its families).</summary>
    public void Dispose()
    {
        _partials.Dispose();
        _arrivals.Dispose();
    }

    /// <summary>
    /// Which kernel <see cref="Launch"/> takes: chosen by shape (default), or one forced (benchmarks, tests). SplitKAhead
    /// is split-k requesting a round's chunks one round ahead (<see cref="OneTileAhead"/>; up to 8 tokens, SplitK above).
    /// SplitSlices is the row-split kernel with each k slice in a group of its own, the slices' partial sums added by the
    /// last to finish. WarpGroupRows and WarpGroupSlices are the same two with a chunk's MMAs issued as the group's wgmma
    /// (<see cref="WarpGroupChunks"/>; Hopper only), WideRows and WideSlices those with two warpgroups a group, 128 rows
    /// sharing a chunk's staged activations (<see cref="WideWarpGroupChunks"/>), WarpGroupTiles the tile kernel with its
    /// warpgroups' wgmma (<see cref="WarpGroupTileChunks"/>; Hopper only).
    /// </summary>
    internal enum Kernels { Auto, SplitK, SplitKAhead, SplitRows, SplitSlices, Tiles, WarpGroupRows, WarpGroupSlices, WideRows, WideSlices, WarpGroupTiles }

    /// <summary>Whether this device has the wgmma row and tile kernels (Hopper, or emulated).</summary>
    internal bool HasWarpGroup => _warpGroupRowKernel != null;

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
    ///
    /// Up to 8 tokens, split-k requests a round ahead where it has at most two groups per SM (<see cref="OneTileAhead"/>;
    /// H100 bs1 step 1.84 → 1.81 ms). On Hopper the row kernels take their wgmma build (H100 bs32 step 3.13 → 3.03 ms; 8B
    /// gate/up at 32 tokens 135.9 µs against the mma.sync build's 170.7), with two warpgroups a group where it has groups
    /// enough (bs32 step 2.96 → 2.86 ms), and the tile kernel its wgmma build (bs32 TTFT p50 134.6 → 103.8 ms).
    /// </summary>
    Kernels Pick(int tokens, int rowGroups, int splitGroups)
    {
        int sms = _device.Accelerator.NumMultiprocessors;
        int tokenTiles = (tokens + TokensPerGroup - 1) / TokensPerGroup;
        long outputTiles = (long)rowGroups * tokenTiles;
        var pick = Choice != Kernels.Auto ? Choice
            : tokens <= 8 ? (splitGroups <= 2 * sms ? Kernels.SplitKAhead : Kernels.SplitK)
            : tokens > TileTokens && TileGroups(tokens, rowGroups) >= 4L * sms ? Kernels.Tiles
            : outputTiles >= 3L * sms ? Kernels.SplitRows
            : Kernels.SplitSlices;
        if (pick == Kernels.SplitKAhead && tokens > 8) return Kernels.SplitK;
        if (Choice == Kernels.Auto && HasWarpGroup)
            pick = pick switch
            {
                // Two warpgroups a group share each chunk's split activations among 128 rows: faster wherever there are
                // groups enough (H100, 32 tokens, µs, one warpgroup a group → two: lm_head 320.9 → 286.3 as rows, 1B
                // gate/up 55.3 → 49.7 and 8B q/k/v 47.4 → 33.1 as slices; with fewer than 2 groups of slices per SM,
                // 1B q/k/v, o and down, ±0.7). Prefill tiles: the tile kernel's wgmma build (4096 × 4096 at 2048
                // tokens: mma.sync tiles 955, wide rows 806, wgmma tiles 695).
                Kernels.SplitRows => Kernels.WideRows,
                Kernels.SplitSlices => (rowGroups + 1L) / 2 * Slices * tokenTiles >= 2L * sms
                    ? Kernels.WideSlices : Kernels.WarpGroupSlices,
                Kernels.Tiles => Kernels.WarpGroupTiles,
                _ => pick,
            };
        if (pick is Kernels.WarpGroupRows or Kernels.WarpGroupSlices or Kernels.WideRows or Kernels.WideSlices or Kernels.WarpGroupTiles && !HasWarpGroup)
            throw new InvalidOperationException("the wgmma row and tile kernels need an sm_90 GPU");
        // A wide tile takes two 64-row tiles' room; each linear of the launch may round up by one.
        long wideTiles = outputTiles + 3L * tokenTiles;
        if (outputTiles > SliceTiles || pick == Kernels.WideSlices && wideTiles > SliceTiles)
            pick = pick switch
            {
                Kernels.SplitSlices => Kernels.SplitRows, Kernels.WarpGroupSlices => Kernels.WarpGroupRows, Kernels.WideSlices => Kernels.WideRows, _ => pick,
            };
        return pick;
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

    /// <summary>The most linears one launch computes (<see cref="LinearSegments"/>).</summary>
    public const int MaxSegments = 4;

    /// <summary>y_i = W_i · x for up to <see cref="MaxSegments"/> (y_i, W_i) sharing x [tokens, k]; one launch.</summary>
    public void Launch(DeviceTensor x, ReadOnlySpan<(DeviceTensor Y, DeviceTensor W)> outputs)
    {
        int tokens = x.Dim(0), k = x.Dim(1);
        int rowGroups = 0, splitGroups = 0;
        foreach (var (_, w) in outputs)
        {
            rowGroups += (w.Dim(0) + RowWarps * RowsPerGroup - 1) / (RowWarps * RowsPerGroup);
            splitGroups += (w.Dim(0) + RowsPerGroup - 1) / RowsPerGroup;
        }
        var kernel = Pick(tokens, rowGroups, splitGroups);
        bool wide = kernel is Kernels.WideRows or Kernels.WideSlices;
        bool rows = wide || kernel is Kernels.SplitRows or Kernels.SplitSlices or Kernels.WarpGroupRows or Kernels.WarpGroupSlices;
        int rowWarps = wide ? WideWarps : RowWarps;
        bool tiles = kernel is Kernels.Tiles or Kernels.WarpGroupTiles;
        int rowsPerGroup = tiles ? TileRows : rows ? rowWarps * RowsPerGroup : RowsPerGroup;
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
                case 2: seg.Y2 = y.F32; seg.W2 = wv; seg.A2 = Address(wv); seg.N2 = n; break;
                default: seg.Y3 = y.F32; seg.W3 = wv; seg.A3 = Address(wv); seg.N3 = n; break;
            }
            blocks += (n + rowsPerGroup - 1) / rowsPerGroup;
            if (i == 0) seg.End0 = seg.End1 = seg.End2 = blocks;
            if (i == 1) seg.End1 = seg.End2 = blocks;
            if (i == 2) seg.End2 = blocks;
        }
        // Unused segments alias segment 0 (never selected: their block range is empty).
        if (outputs.Length < 2) { seg.Y1 = seg.Y0; seg.W1 = seg.W0; seg.A1 = seg.A0; }
        if (outputs.Length < 3) { seg.Y2 = seg.Y0; seg.W2 = seg.W0; seg.A2 = seg.A0; }
        if (outputs.Length < 4) { seg.Y3 = seg.Y0; seg.W3 = seg.W0; seg.A3 = seg.A0; }
        int tokenTiles = (tokens + TokensPerGroup - 1) / TokensPerGroup;
        if (rows)
        {
            int slices = kernel is Kernels.SplitSlices or Kernels.WarpGroupSlices or Kernels.WideSlices ? Slices : 1;
            var rowKernel = wide ? _wideRowKernel! : kernel is Kernels.WarpGroupRows or Kernels.WarpGroupSlices ? _warpGroupRowKernel! : _rowKernel;
            rowKernel(_device.Stream, new KernelConfig(new Index2D(blocks * slices, tokenTiles), new Index2D(rowWarps * 32, 1)),
                x.F32.Cast<F4>(), seg, tokens, k, slices, _partials.View, _arrivals.View);
        }
        else if (tiles)
            (kernel == Kernels.WarpGroupTiles ? _warpGroupTileKernel! : _tileKernel)(_device.Stream, new KernelConfig(new Index2D(blocks, (tokens + TileTokens - 1) / TileTokens), new Index2D(TileWarps * 32, 1)),
                x.F32.Cast<F4>(), seg, tokens, k);
        else (tokens > 8 ? _kernel : kernel == Kernels.SplitKAhead ? _kernelOneTileAhead : _kernelOneTile)(_device.Stream, new KernelConfig(new Index2D(blocks, tokenTiles), new Index2D(Warps * 32, 1)), x.F32.Cast<F4>(), seg, tokens, k);
    }

    /// <summary>The linear group <paramref name="block"/> serves (its weight and its address, output and rows) and its block within that linear.</summary>
    static int Select(LinearSegments seg, int block, out ArrayView<U4> w, out long address, out ArrayView<float> y, out int n)
    {
        if (block >= seg.End2)
        {
            (w, address, y, n) = (seg.W3, seg.A3, seg.Y3, seg.N3);
            return block - seg.End2;
        }
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
}
