using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

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
    public int N0, N1, N2;
    public int S0, S1, S2;                // k slices of each segment (a function of n_s and k only)
    public int End0, End1;                // blockIdx.x where segment 1 and segment 2 begin
    public int Ws1, Ws2;                  // first workspace tile of segment 1 and 2 (one tile per row group × slice)
    public int Rows1, Rows2;              // first counter of segment 1 and 2 (one counter per row group)
}

/// <summary>
/// y[t, o] = Σ_k W[o, k] · x[t, k] on the tensor cores (<c>mma.sync.m16n8k16</c>, BF16 × BF16 → F32) for BF16 weights,
/// any token count. "Swap AB": the weight is the MMA's A operand (16 output rows), tokens are its N (8 per tile), so a
/// decode step of one token streams each weight once, 16 bytes per load. The F32 activation is split into three BF16
/// parts, x ≈ hi + mid + lo to ~2⁻²⁶ relative (two parts, ~2⁻¹⁷, missed F32 results by 3e-4 relative where a dot product
/// cancels), each multiplied against the same weight fragment: F32-grade accuracy from BF16 products, which are exact
/// in the F32 accumulator.
///
/// Parallelisation: a group of 8 warps owns 16 output rows × 32 tokens. K is cut into S contiguous slices (S from n and
/// k only: enough groups to fill the GPU for a decode step, each slice at least two 32-wide chunks per warp); within a
/// slice warp w takes chunks w, w+8, … in order, loading the next pair while it multiplies the current one, and the
/// eight warps' partial sums are added in shared memory in warp order. The slices are then added in slice order:
/// by the group itself, slice after slice, when there are more than 32 tokens; for up to 32 tokens each slice is a group
/// of its own that writes its partial sum to a workspace, and the last of the S groups to finish (an atomic counter)
/// adds the S partials in slice order. Both give the same sum, so the k order of a token's result depends on k and n
/// only — never on the token count — and every output column of an MMA depends only on its own token: a token's result
/// is bit-identical whatever batch or tile it is in.
///
/// Within a chunk the k index is permuted so that each thread's fragment is one 16-byte load: lane (g, t) holds
/// physical k 8t..8t+3 for the first MMA and 8t+4..8t+7 for the second; A and B use the same map, so the dot product
/// is unchanged.
/// </summary>
internal sealed class TensorCoreLinear : IDisposable
{
    const int Warps = 8;
    const int RowsPerGroup = 16;
    const int TokensPerGroup = 32; // four n-tiles of 8
    const int ChunkK = 32;
    const int TileFloats = 32 * 16; // warp 0's sums: 16 per lane
    const int MaxSegments = 3;

    const string MmaPtx = "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 " +
                       "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};";

    readonly ComputeDevice _device;
    readonly Action<AcceleratorStream, KernelConfig, ArrayView<F4>, LinearSegments, int, int, int, ArrayView<float>, ArrayView<int>> _kernel;
    readonly int _targetGroups;
    readonly MemoryBuffer1D<float, Stride1D.Dense> _workspace; // partial sums of sliced groups
    readonly MemoryBuffer1D<int, Stride1D.Dense> _counters;    // slices finished per row group; the last resets it to 0

    TensorCoreLinear(ComputeDevice device)
    {
        _device = device;
        _kernel = device.Kind == DeviceKind.Cuda
            ? device.Accelerator.LoadKernel<ArrayView<F4>, LinearSegments, int, int, int, ArrayView<float>, ArrayView<int>>(Kernel<PtxOps>)
            : device.Accelerator.LoadKernel<ArrayView<F4>, LinearSegments, int, int, int, ArrayView<float>, ArrayView<int>>(Kernel<EmulatedOps>);
        _targetGroups = 4 * device.Accelerator.NumMultiprocessors;
        // A sliced segment has fewer row groups than the target and row groups × slices ≤ the target.
        _workspace = device.Accelerator.Allocate1D<float>((long)MaxSegments * _targetGroups * TileFloats);
        _counters = device.Accelerator.Allocate1D<int>(MaxSegments * _targetGroups);
        _counters.MemSetToZero(device.Stream);
    }

    /// <summary>The tensor-core linear of a CUDA device; null elsewhere (no inline PTX there).</summary>
    public static TensorCoreLinear? TryCreate(ComputeDevice device) => device.Kind == DeviceKind.Cuda ? new TensorCoreLinear(device) : null;

    /// <summary>This kernel on any device: on ILGPU's CPU accelerator its MMAs are emulated (tests of the kernel's logic).</summary>
    internal static TensorCoreLinear Create(ComputeDevice device) => new(device);

    /// <summary>Whether (x, w) fit this kernel: BF16 weights, K a multiple of 8, 16-byte aligned rows.</summary>
    public static bool Supports(DeviceTensor x, DeviceTensor w) =>
        w.DType == DType.BF16 && w.Dim(1) % 8 == 0 && w.ElementOffset % 8 == 0 && x.ElementOffset % 4 == 0;

    /// <summary>K slices of an n × k weight: a function of its shape (and the GPU's size) only, never of the token count.</summary>
    int Slices(int n, int k)
    {
        int rowGroups = (n + RowsPerGroup - 1) / RowsPerGroup;
        int chunks = (k + ChunkK - 1) / ChunkK;
        return Math.Max(1, Math.Min(_targetGroups / rowGroups, chunks / (2 * Warps)));
    }

    /// <summary>y_i = W_i · x for up to three (y_i, W_i) sharing x [tokens, k]; one launch.</summary>
    public void Launch(DeviceTensor x, ReadOnlySpan<(DeviceTensor Y, DeviceTensor W)> outputs) =>
        Launch(x, outputs, sliced: x.Dim(0) <= TokensPerGroup);

    /// <summary>
    /// <paramref name="sliced"/>: one group per slice, the last adding them (up to 32 tokens); else each group adds its
    /// own slices. Both give the same bits (tests compare them).
    /// </summary>
    internal void Launch(DeviceTensor x, ReadOnlySpan<(DeviceTensor Y, DeviceTensor W)> outputs, bool sliced)
    {
        int tokens = x.Dim(0), k = x.Dim(1);
        if (sliced && tokens > TokensPerGroup) throw new ArgumentException($"a sliced launch takes at most {TokensPerGroup} tokens, got {tokens}", nameof(sliced));
        var seg = new LinearSegments();
        int blocks = 0, tiles = 0, rows = 0;
        for (int i = 0; i < outputs.Length; i++)
        {
            var (y, w) = outputs[i];
            int n = w.Dim(0), s = Slices(n, k), rowGroups = (n + RowsPerGroup - 1) / RowsPerGroup;
            var wv = w.U16.Cast<U4>();
            switch (i)
            {
                case 0: seg.Y0 = y.F32; seg.W0 = wv; seg.N0 = n; seg.S0 = s; break;
                case 1: seg.Y1 = y.F32; seg.W1 = wv; seg.N1 = n; seg.S1 = s; seg.End0 = blocks; seg.Ws1 = tiles; seg.Rows1 = rows; break;
                default: seg.Y2 = y.F32; seg.W2 = wv; seg.N2 = n; seg.S2 = s; seg.End1 = blocks; seg.Ws2 = tiles; seg.Rows2 = rows; break;
            }
            blocks += rowGroups * (sliced ? s : 1);
            tiles += s > 1 ? rowGroups * s : 0;
            rows += rowGroups;
        }
        // Unused segments alias segment 0 (never selected: their block range is empty).
        if (outputs.Length < 2) { seg.Y1 = seg.Y0; seg.W1 = seg.W0; seg.S1 = 1; seg.End0 = blocks; }
        if (outputs.Length < 3) { seg.Y2 = seg.Y0; seg.W2 = seg.W0; seg.S2 = 1; seg.End1 = blocks; }
        var grid = new Index2D(blocks, (tokens + TokensPerGroup - 1) / TokensPerGroup);
        _kernel(_device.Stream, new KernelConfig(grid, new Index2D(Warps * 32, 1)), x.F32.Cast<F4>(), seg, tokens, k, sliced ? 1 : 0,
            _workspace.View, _counters.View);
    }

    public void Dispose()
    {
        _workspace.Dispose();
        _counters.Dispose();
    }

    static void Kernel<TOps>(ArrayView<F4> x, LinearSegments seg, int tokens, int k, int sliced, ArrayView<float> workspace, ArrayView<int> counters)
        where TOps : struct, ITensorCoreOps
    {
        var partial = SharedMemory.Allocate<float>(Warps * TileFloats);
        var total = SharedMemory.Allocate<float>(TileFloats);
        var last = SharedMemory.Allocate<int>(1);

        // Which linear this group serves, its 16 rows and its slices.
        int bx = Grid.IdxX;
        ArrayView<U4> w = seg.W0;
        ArrayView<float> y = seg.Y0;
        int n = seg.N0, slices = seg.S0, ws = 0, rowBase = 0;
        if (bx >= seg.End1)
        {
            w = seg.W2; y = seg.Y2; n = seg.N2; slices = seg.S2; ws = seg.Ws2; rowBase = seg.Rows2; bx -= seg.End1;
        }
        else if (bx >= seg.End0)
        {
            w = seg.W1; y = seg.Y1; n = seg.N1; slices = seg.S1; ws = seg.Ws1; rowBase = seg.Rows1; bx -= seg.End0;
        }
        int rowGroup = bx, sFirst = 0, sEnd = slices;
        if (sliced != 0)
        {
            rowGroup = bx / slices;
            sFirst = bx - rowGroup * slices;
            sEnd = sFirst + 1;
        }

        int warp = Warp.WarpIdx, lane = Warp.LaneIdx;
        int g = lane >> 2, t = lane & 3;
        int rowA = rowGroup * RowsPerGroup + g, rowB = rowA + 8;
        int tok0 = Grid.IdxY * TokensPerGroup;
        int tiles = (tokens - tok0 + 7) / 8;
        if (tiles > 4) tiles = 4;
        int units = k / 8;                       // 16-byte units per row
        int chunks = (k + ChunkK - 1) / ChunkK;
        long baseA = (long)rowA * units, baseB = (long)rowB * units;
        bool okA = rowA < n, okB = rowB < n;
        long xRow = (long)(tok0 + g) * (units * 2);
        bool tokOk = tok0 + g < tokens;
        int mine = lane * 16;

        if (warp == 0)
            for (int i = 0; i < 16; i++) total[mine + i] = 0;

        for (int s = sFirst; s < sEnd; s++)
        {
            int cEnd = (int)((long)(s + 1) * chunks / slices);
            float c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
            float c20 = 0, c21 = 0, c22 = 0, c23 = 0, c30 = 0, c31 = 0, c32 = 0, c33 = 0;

            // Chunks c, c+8 are multiplied while c+16, c+24 load.
            int c = (int)((long)s * chunks / slices) + warp;
            var k0 = LoadChunk(w, x, baseA, baseB, okA, okB, c, cEnd, t, units, xRow, tokOk);
            var k1 = LoadChunk(w, x, baseA, baseB, okA, okB, c + Warps, cEnd, t, units, xRow, tokOk);
            while (c < cEnd)
            {
                int next = c + 2 * Warps;
                var n0 = LoadChunk(w, x, baseA, baseB, okA, okB, next, cEnd, t, units, xRow, tokOk);
                var n1 = LoadChunk(w, x, baseA, baseB, okA, okB, next + Warps, cEnd, t, units, xRow, tokOk);
                Chunk<TOps>(x, k0, c * 4 + t, units, tok0 + g, tokens, tiles, ref c00, ref c01, ref c02, ref c03, ref c10, ref c11, ref c12, ref c13,
                    ref c20, ref c21, ref c22, ref c23, ref c30, ref c31, ref c32, ref c33);
                if (c + Warps < cEnd)
                    Chunk<TOps>(x, k1, (c + Warps) * 4 + t, units, tok0 + g, tokens, tiles, ref c00, ref c01, ref c02, ref c03, ref c10, ref c11, ref c12, ref c13,
                        ref c20, ref c21, ref c22, ref c23, ref c30, ref c31, ref c32, ref c33);
                k0 = n0;
                k1 = n1;
                c = next;
            }

            // The slice's sum: the warps' partials in warp order, added to the slices before it.
            int p = warp * TileFloats + mine;
            partial[p + 0] = c00; partial[p + 1] = c01; partial[p + 2] = c02; partial[p + 3] = c03;
            partial[p + 4] = c10; partial[p + 5] = c11; partial[p + 6] = c12; partial[p + 7] = c13;
            partial[p + 8] = c20; partial[p + 9] = c21; partial[p + 10] = c22; partial[p + 11] = c23;
            partial[p + 12] = c30; partial[p + 13] = c31; partial[p + 14] = c32; partial[p + 15] = c33;
            Group.Barrier();
            if (warp == 0)
                for (int i = 0; i < 16; i++)
                {
                    float d = 0;
                    for (int v = 0; v < Warps; v++) d += partial[v * TileFloats + mine + i];
                    total[mine + i] += d;
                }
            Group.Barrier();
        }

        if (sEnd - sFirst < slices)
        {
            // One slice of several: publish it; the last of the row group's slices to finish adds them all in order.
            long tile = (long)(ws + rowGroup * slices) * TileFloats;
            if (warp == 0)
                for (int i = 0; i < 16; i++) workspace[tile + sFirst * TileFloats + mine + i] = total[mine + i];
            MemoryFence.DeviceLevel();
            Group.Barrier();
            if (Group.IsFirstThread) last[0] = Atomic.Add(ref counters[rowBase + rowGroup], 1) == slices - 1 ? 1 : 0;
            Group.Barrier();
            if (last[0] == 0 || warp != 0) return;
            MemoryFence.DeviceLevel();
            for (int i = 0; i < 16; i++)
            {
                float d = 0;
                for (int s = 0; s < slices; s++) d += Atomic.Add(ref workspace[tile + s * TileFloats + mine + i], 0f); // read at L2: other SMs wrote it
                total[mine + i] = d;
            }
            if (lane == 0) counters[rowBase + rowGroup] = 0; // ready for the next launch
        }
        if (warp != 0) return;
        for (int j = 0; j < tiles; j++)
        {
            int ta = tok0 + j * 8 + 2 * t, tb = ta + 1;
            Store(y, n, tokens, ta, rowA, total[mine + j * 4]);
            Store(y, n, tokens, tb, rowA, total[mine + j * 4 + 1]);
            Store(y, n, tokens, ta, rowB, total[mine + j * 4 + 2]);
            Store(y, n, tokens, tb, rowB, total[mine + j * 4 + 3]);
        }
    }

    /// <summary>A lane's share of one 32-wide k chunk: rows g and g+8 of the weight, and its first tile's token.</summary>
    struct ChunkData
    {
        public U4 A, B;
        public F4 X0, X1;
    }

    static ChunkData LoadChunk(ArrayView<U4> w, ArrayView<F4> x, long baseA, long baseB, bool okA, bool okB, int chunk, int chunkEnd, int t,
        int units, long xRow, bool tokOk)
    {
        var c = default(ChunkData);
        int unit = chunk * 4 + t;
        if (chunk >= chunkEnd || unit >= units) return c; // past the slice or past k: zeros add nothing
        if (okA) c.A = w[baseA + unit];
        if (okB) c.B = w[baseB + unit];
        if (tokOk)
        {
            c.X0 = x[xRow + unit * 2];
            c.X1 = x[xRow + unit * 2 + 1];
        }
        return c;
    }

    /// <summary>One chunk against every tile of tokens: the first tile's activations came with the chunk, the others are loaded here.</summary>
    static void Chunk<TOps>(ArrayView<F4> x, ChunkData k, int unit, int units, int token, int tokens, int tiles,
        ref float c00, ref float c01, ref float c02, ref float c03, ref float c10, ref float c11, ref float c12, ref float c13,
        ref float c20, ref float c21, ref float c22, ref float c23, ref float c30, ref float c31, ref float c32, ref float c33)
        where TOps : struct, ITensorCoreOps
    {
        Mma<TOps>(k.A, k.B, k.X0, k.X1, ref c00, ref c01, ref c02, ref c03);
        if (tiles > 1) Tile<TOps>(x, k.A, k.B, unit, units, token + 8, tokens, ref c10, ref c11, ref c12, ref c13);
        if (tiles > 2) Tile<TOps>(x, k.A, k.B, unit, units, token + 16, tokens, ref c20, ref c21, ref c22, ref c23);
        if (tiles > 3) Tile<TOps>(x, k.A, k.B, unit, units, token + 24, tokens, ref c30, ref c31, ref c32, ref c33);
    }

    /// <summary>One n-tile (8 tokens) × one 32-wide k chunk: four MMAs (two k16 halves × hi/lo); a, b: rows g and g+8.</summary>
    static void Tile<TOps>(ArrayView<F4> x, U4 a, U4 b, int unit, int units, int token, int tokens,
        ref float d0, ref float d1, ref float d2, ref float d3)
        where TOps : struct, ITensorCoreOps
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
    static void Mma<TOps>(U4 a, U4 b, F4 x0, F4 x1, ref float d0, ref float d1, ref float d2, ref float d3)
        where TOps : struct, ITensorCoreOps
    {
        Split<TOps>(x0.X, x0.Y, out uint h01, out uint m01, out uint l01);
        Split<TOps>(x0.Z, x0.W, out uint h23, out uint m23, out uint l23);
        Split<TOps>(x1.X, x1.Y, out uint h45, out uint m45, out uint l45);
        Split<TOps>(x1.Z, x1.W, out uint h67, out uint m67, out uint l67);
        // Fragment registers: a0 = row g, a1 = row g+8, a2 = row g (next pair), a3 = row g+8 (next pair).
        default(TOps).MmaAcc(ref d0, ref d1, ref d2, ref d3, a.X, b.X, a.Y, b.Y, h01, h23);
        default(TOps).MmaAcc(ref d0, ref d1, ref d2, ref d3, a.X, b.X, a.Y, b.Y, m01, m23);
        default(TOps).MmaAcc(ref d0, ref d1, ref d2, ref d3, a.X, b.X, a.Y, b.Y, l01, l23);
        default(TOps).MmaAcc(ref d0, ref d1, ref d2, ref d3, a.Z, b.Z, a.W, b.W, h45, h67);
        default(TOps).MmaAcc(ref d0, ref d1, ref d2, ref d3, a.Z, b.Z, a.W, b.W, m45, m67);
        default(TOps).MmaAcc(ref d0, ref d1, ref d2, ref d3, a.Z, b.Z, a.W, b.W, l45, l67);
    }

    /// <summary>Two F32 values as packed BF16 pairs (low half first): hi = bf16(v), mid = bf16(v − hi), lo = bf16(v − hi − mid).</summary>
    static void Split<TOps>(float v0, float v1, out uint hi, out uint mid, out uint lo) where TOps : struct, ITensorCoreOps
    {
        hi = default(TOps).PackBf16(v0, v1);
        float r0 = v0 - Interop.IntAsFloat(hi << 16), r1 = v1 - Interop.IntAsFloat(hi & 0xFFFF0000u);
        mid = default(TOps).PackBf16(r0, r1);
        lo = default(TOps).PackBf16(r0 - Interop.IntAsFloat(mid << 16), r1 - Interop.IntAsFloat(mid & 0xFFFF0000u));
    }

    /// <summary>The two instructions the kernel needs: the real ones on CUDA, emulated ones elsewhere (tests).</summary>
    internal interface ITensorCoreOps
    {
        /// <summary>bf16(v0) | bf16(v1) &lt;&lt; 16, rounded to nearest even.</summary>
        uint PackBf16(float v0, float v1);

        /// <summary>d += A·B for one m16n8k16 tile (BF16 fragments, F32 accumulators).</summary>
        void MmaAcc(ref float d0, ref float d1, ref float d2, ref float d3, uint a0, uint a1, uint a2, uint a3, uint b0, uint b1);
    }

    /// <summary>Inline PTX: <c>cvt.rn.bf16x2.f32</c> and <c>mma.sync.m16n8k16</c>.</summary>
    internal readonly struct PtxOps : ITensorCoreOps
    {
        public uint PackBf16(float v0, float v1)
        {
            uint packed = 0;
            Ref<uint> d = packed;
            Input<float> high = v1, low = v0; // cvt's first source goes high
            CudaAsm.EmitRef("cvt.rn.bf16x2.f32 %0, %1, %2;", ref d, ref high, ref low);
            return d.Value;
        }

        public void MmaAcc(ref float d0, ref float d1, ref float d2, ref float d3, uint a0, uint a1, uint a2, uint a3, uint b0, uint b1)
        {
            Ref<float> r0 = d0, r1 = d1, r2 = d2, r3 = d3;
            Input<uint> i0 = a0, i1 = a1, i2 = a2, i3 = a3, j0 = b0, j1 = b1;
            CudaAsm.EmitRef(MmaPtx, ref r0, ref r1, ref r2, ref r3, ref i0, ref i1, ref i2, ref i3, ref j0, ref j1);
            d0 = r0.Value;
            d1 = r1.Value;
            d2 = r2.Value;
            d3 = r3.Value;
        }
    }

    /// <summary>
    /// The two instructions in plain code, for ILGPU's CPU accelerator, so the tests run this kernel's slicing, ordering
    /// and fragment layout without a GPU. PTX's fragments, lane (g, t) = (lane / 4, lane % 4): A row g holds k 2t, 2t+1
    /// in a0 and 2t+8, 2t+9 in a2 (row g+8: a1, a3); B column g holds k 2t, 2t+1 in b0 and 2t+8, 2t+9 in b1; d0, d1 are
    /// row g, columns 2t, 2t+1 and d2, d3 row g+8; the other lanes' fragments come by warp shuffles. Each product is exact
    /// in F32; the sum's order is the emulation's own (the hardware's is not documented), so CPU results match the GPU's
    /// closely, not bit for bit.
    /// </summary>
    internal readonly struct EmulatedOps : ITensorCoreOps
    {
        public uint PackBf16(float v0, float v1) => Bf16Bits(v0) | Bf16Bits(v1) << 16;

        static uint Bf16Bits(float v)
        {
            uint u = Interop.FloatAsInt(v);
            if ((u & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FC0u; // NaN stays NaN
            return (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
        }

        public void MmaAcc(ref float d0, ref float d1, ref float d2, ref float d3, uint a0, uint a1, uint a2, uint a3, uint b0, uint b1)
        {
            int lane = Warp.LaneIdx, g = lane >> 2, t = lane & 3;
            float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
            for (int q = 0; q < 4; q++)
            {
                int rowLane = g * 4 + q, col0 = 2 * t * 4 + q, col1 = col0 + 4;
                uint ag0 = Warp.Shuffle(a0, rowLane), ag2 = Warp.Shuffle(a2, rowLane);   // row g: k 2q, 2q+1 and 2q+8, 2q+9
                uint ah1 = Warp.Shuffle(a1, rowLane), ah3 = Warp.Shuffle(a3, rowLane);   // row g+8
                uint x0 = Warp.Shuffle(b0, col0), x1 = Warp.Shuffle(b1, col0);           // column 2t
                uint z0 = Warp.Shuffle(b0, col1), z1 = Warp.Shuffle(b1, col1);           // column 2t+1
                s0 += Dot2(ag0, x0) + Dot2(ag2, x1);
                s1 += Dot2(ag0, z0) + Dot2(ag2, z1);
                s2 += Dot2(ah1, x0) + Dot2(ah3, x1);
                s3 += Dot2(ah1, z0) + Dot2(ah3, z1);
            }
            d0 += s0;
            d1 += s1;
            d2 += s2;
            d3 += s3;
        }

        static float Dot2(uint a, uint b) =>
            Interop.IntAsFloat(a << 16) * Interop.IntAsFloat(b << 16) + Interop.IntAsFloat(a & 0xFFFF0000u) * Interop.IntAsFloat(b & 0xFFFF0000u);
    }

    static void Store(ArrayView<float> y, int n, int tokens, int token, int row, float v)
    {
        if (token < tokens && row < n) y[(long)token * n + row] = v;
    }
}
