using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace LoraEngine.Tensors.Kernels;

/// <summary>
/// <see cref="HostGemm"/>'s tiles for AVX2 machines (no AVX-512). Each 16-lane accumulator of the AVX-512 tiles is two
/// 8-lane halves here (lanes 0–7 and 8–15), each half taking the same FMAs in the same order, so every lane and every
/// output gets the same bits on both kinds of machine. With 16 registers instead of 32 a tile is one row × up to 6
/// tokens (packed) or one row × up to 3 tokens (streamed, whose two chains need twice the accumulators).
/// </summary>
internal static unsafe partial class HostGemm
{
    /// <summary>Tokens a streamed AVX2 row tile takes at once (4 accumulators each, 12 registers).</summary>
    const int StreamTokensAvx2 = 3;

    /// <summary>The AVX2 twin of <see cref="RowTile{TRows}"/>: the tokens in groups of up to 3, each group reading the row (the later ones from L1).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void RowTileAvx2<THalves>(int n, byte* row, float** xs, int k16, Vector512<float>* v) where THalves : struct, IHalves
    {
        for (int j = 0; j < n; j += StreamTokensAvx2)
        {
            switch (Math.Min(StreamTokensAvx2, n - j))
            {
                case 1: RowTileAvx2<THalves, N1>(row, xs + j, k16, v + j); break;
                case 2: RowTileAvx2<THalves, N2>(row, xs + j, k16, v + j); break;
                default: RowTileAvx2<THalves, N3>(row, xs + j, k16, v + j); break;
            }
        }
    }

    /// <summary>
    /// v[j] = (Σ over even k-steps of W[k..k+16] ⊙ x_j[k..k+16]) + (Σ over odd k-steps …), as <see cref="RowTile{TRows, TN}"/>
    /// computes it, for one row read in place and up to 3 tokens.
    /// </summary>
    [SkipLocalsInit]
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void RowTileAvx2<THalves, TN>(byte* row, float** xs, int k16, Vector512<float>* v)
        where THalves : struct, IHalves where TN : struct, ITokenCount
    {
        int n = TN.Value;
        float* x0 = xs[0], x1 = n > 1 ? xs[1] : x0, x2 = n > 2 ? xs[2] : x0;
        Vector256<float> e0l = default, e0h = default, e1l = default, e1h = default, e2l = default, e2h = default;
        Vector256<float> o0l = default, o0h = default, o1l = default, o1h = default, o2l = default, o2h = default;
        int k = 0;
        for (; k + 32 <= k16; k += 32)
        {
            Sse.Prefetch1(row + (k + StreamPrefetchElements) * THalves.Size);
            byte* step = row + k * THalves.Size;
            var wl = THalves.Lo(step);
            var wh = THalves.Hi(step);
            e0l = Vector256.FusedMultiplyAdd(wl, Vector256.Load(x0 + k), e0l);
            e0h = Vector256.FusedMultiplyAdd(wh, Vector256.Load(x0 + k + 8), e0h);
            if (n > 1)
            {
                e1l = Vector256.FusedMultiplyAdd(wl, Vector256.Load(x1 + k), e1l);
                e1h = Vector256.FusedMultiplyAdd(wh, Vector256.Load(x1 + k + 8), e1h);
            }
            if (n > 2)
            {
                e2l = Vector256.FusedMultiplyAdd(wl, Vector256.Load(x2 + k), e2l);
                e2h = Vector256.FusedMultiplyAdd(wh, Vector256.Load(x2 + k + 8), e2h);
            }
            step += 16 * THalves.Size;
            wl = THalves.Lo(step);
            wh = THalves.Hi(step);
            o0l = Vector256.FusedMultiplyAdd(wl, Vector256.Load(x0 + k + 16), o0l);
            o0h = Vector256.FusedMultiplyAdd(wh, Vector256.Load(x0 + k + 24), o0h);
            if (n > 1)
            {
                o1l = Vector256.FusedMultiplyAdd(wl, Vector256.Load(x1 + k + 16), o1l);
                o1h = Vector256.FusedMultiplyAdd(wh, Vector256.Load(x1 + k + 24), o1h);
            }
            if (n > 2)
            {
                o2l = Vector256.FusedMultiplyAdd(wl, Vector256.Load(x2 + k + 16), o2l);
                o2h = Vector256.FusedMultiplyAdd(wh, Vector256.Load(x2 + k + 24), o2h);
            }
        }
        if (k < k16)
        {
            byte* step = row + k * THalves.Size;
            var wl = THalves.Lo(step);
            var wh = THalves.Hi(step);
            e0l = Vector256.FusedMultiplyAdd(wl, Vector256.Load(x0 + k), e0l);
            e0h = Vector256.FusedMultiplyAdd(wh, Vector256.Load(x0 + k + 8), e0h);
            if (n > 1)
            {
                e1l = Vector256.FusedMultiplyAdd(wl, Vector256.Load(x1 + k), e1l);
                e1h = Vector256.FusedMultiplyAdd(wh, Vector256.Load(x1 + k + 8), e1h);
            }
            if (n > 2)
            {
                e2l = Vector256.FusedMultiplyAdd(wl, Vector256.Load(x2 + k), e2l);
                e2h = Vector256.FusedMultiplyAdd(wh, Vector256.Load(x2 + k + 8), e2h);
            }
        }
        v[0] = Vector512.Create(e0l + o0l, e0h + o0h);
        if (n > 1) v[1] = Vector512.Create(e1l + o1l, e1h + o1h);
        if (n > 2) v[2] = Vector512.Create(e2l + o2l, e2h + o2h);
    }

    /// <summary>
    /// The AVX2 twin of <see cref="PackedTile{TRows}"/> (same operands, accumulators and results): the 4 rows one after
    /// another, each against the tile's n tokens.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void PackedTileAvx2<THalves>(int n, byte* w, float* x, int steps, bool resume, Vector512<float>* acc, Vector512<float>* sumInto)
        where THalves : struct, IHalves
    {
        for (int r = 0; r < TileRows; r++)
        {
            byte* wr = w + r * 16 * THalves.Size;
            var accR = acc + r * TileTokens;
            var sumR = sumInto == null ? null : sumInto + r * TileTokens;
            switch (n)
            {
                case 1: PackedRowAvx2<THalves, N1>(wr, x, steps, resume, accR, sumR); break;
                case 2: PackedRowAvx2<THalves, N2>(wr, x, steps, resume, accR, sumR); break;
                case 3: PackedRowAvx2<THalves, N3>(wr, x, steps, resume, accR, sumR); break;
                case 4: PackedRowAvx2<THalves, N4>(wr, x, steps, resume, accR, sumR); break;
                case 5: PackedRowAvx2<THalves, N5>(wr, x, steps, resume, accR, sumR); break;
                default: PackedRowAvx2<THalves, N6>(wr, x, steps, resume, accR, sumR); break;
            }
        }
    }

    /// <summary>
    /// One row of a packed tile: per k-step, the row's 16 values at w (a step of 4 rows is 64 values apart) against
    /// TN.Value token vectors at x; acc[j] (+)= …, or with <paramref name="sumInto"/> sumInto[j] += the sums.
    /// </summary>
    [SkipLocalsInit]
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void PackedRowAvx2<THalves, TN>(byte* w, float* x, int steps, bool resume, Vector512<float>* acc, Vector512<float>* sumInto)
        where THalves : struct, IHalves where TN : struct, ITokenCount
    {
        int n = TN.Value;
        Vector256<float> a0l = default, a0h = default, a1l = default, a1h = default, a2l = default, a2h = default;
        Vector256<float> a3l = default, a3h = default, a4l = default, a4h = default, a5l = default, a5h = default;
        var halves = (Vector256<float>*)acc;
        if (resume)
        {
            a0l = halves[0]; a0h = halves[1];
            if (n > 1) { a1l = halves[2]; a1h = halves[3]; }
            if (n > 2) { a2l = halves[4]; a2h = halves[5]; }
            if (n > 3) { a3l = halves[6]; a3h = halves[7]; }
            if (n > 4) { a4l = halves[8]; a4h = halves[9]; }
            if (n > 5) { a5l = halves[10]; a5h = halves[11]; }
        }
        for (int s = 0; s < steps; s++, w += 64 * THalves.Size, x += 16 * n)
        {
            var wl = THalves.Lo(w);
            var wh = THalves.Hi(w);
            a0l = Vector256.FusedMultiplyAdd(wl, Vector256.Load(x), a0l);
            a0h = Vector256.FusedMultiplyAdd(wh, Vector256.Load(x + 8), a0h);
            if (n > 1)
            {
                a1l = Vector256.FusedMultiplyAdd(wl, Vector256.Load(x + 16), a1l);
                a1h = Vector256.FusedMultiplyAdd(wh, Vector256.Load(x + 24), a1h);
            }
            if (n > 2)
            {
                a2l = Vector256.FusedMultiplyAdd(wl, Vector256.Load(x + 32), a2l);
                a2h = Vector256.FusedMultiplyAdd(wh, Vector256.Load(x + 40), a2h);
            }
            if (n > 3)
            {
                a3l = Vector256.FusedMultiplyAdd(wl, Vector256.Load(x + 48), a3l);
                a3h = Vector256.FusedMultiplyAdd(wh, Vector256.Load(x + 56), a3h);
            }
            if (n > 4)
            {
                a4l = Vector256.FusedMultiplyAdd(wl, Vector256.Load(x + 64), a4l);
                a4h = Vector256.FusedMultiplyAdd(wh, Vector256.Load(x + 72), a4h);
            }
            if (n > 5)
            {
                a5l = Vector256.FusedMultiplyAdd(wl, Vector256.Load(x + 80), a5l);
                a5h = Vector256.FusedMultiplyAdd(wh, Vector256.Load(x + 88), a5h);
            }
        }
        if (sumInto != null)
        {
            halves = (Vector256<float>*)sumInto;
            a0l += halves[0]; a0h += halves[1];
            if (n > 1) { a1l += halves[2]; a1h += halves[3]; }
            if (n > 2) { a2l += halves[4]; a2h += halves[5]; }
            if (n > 3) { a3l += halves[6]; a3h += halves[7]; }
            if (n > 4) { a4l += halves[8]; a4h += halves[9]; }
            if (n > 5) { a5l += halves[10]; a5h += halves[11]; }
        }
        halves[0] = a0l; halves[1] = a0h;
        if (n > 1) { halves[2] = a1l; halves[3] = a1h; }
        if (n > 2) { halves[4] = a2l; halves[5] = a2h; }
        if (n > 3) { halves[6] = a3l; halves[7] = a3h; }
        if (n > 4) { halves[8] = a4l; halves[9] = a4h; }
        if (n > 5) { halves[10] = a5l; halves[11] = a5h; }
    }

    /// <summary>
    /// Copies 16 BF16 values into the order <see cref="Bf16PanelHalves"/> reads: 64-bit groups k0–3, k8–11, k4–7,
    /// k12–15, so that one interleave with zeros gives lanes 0–7 and the other lanes 8–15.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void StorePanelStepAvx2(ushort* src, ushort* dst) =>
        Avx2.Permute4x64(Vector256.Load(src).AsUInt64(), 0b11_01_10_00).Store((ulong*)dst);

    /// <summary>16 BF16 values as F32, in one AVX-512 register or two AVX2 halves.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> WidenBf16(ushort* p) => Avx512
        ? Bf16Rows.Load((byte*)p, 0)
        : Vector512.Create(Bf16Halves.Lo((byte*)p), Bf16Halves.Hi((byte*)p));

    /// <summary>Reads a 16-value step of a row as two 8-lane F32 halves: lanes 0–7 and 8–15.</summary>
    interface IHalves
    {
        /// <summary>Bytes per stored element.</summary>
        static abstract int Size { get; }

        static abstract Vector256<float> Lo(byte* step);

        static abstract Vector256<float> Hi(byte* step);
    }

    struct F32Halves : IHalves
    {
        public static int Size => 4;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> Lo(byte* step) => Vector256.Load((float*)step);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> Hi(byte* step) => Vector256.Load((float*)step + 8);
    }

    /// <summary>BF16 in the weights' own order: zero-extend 8 values to 32 bits and shift them up.</summary>
    struct Bf16Halves : IHalves
    {
        public static int Size => 2;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> Lo(byte* step) => Avx2.ShiftLeftLogical(Avx2.ConvertToVector256Int32((ushort*)step), 16).AsSingle();

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> Hi(byte* step) => Avx2.ShiftLeftLogical(Avx2.ConvertToVector256Int32((ushort*)step + 8), 16).AsSingle();
    }

    /// <summary>
    /// BF16 in a panel's order (<see cref="StorePanelStepAvx2"/>): interleaving zeros below each value makes it an F32,
    /// one instruction for each half instead of two.
    /// </summary>
    struct Bf16PanelHalves : IHalves
    {
        public static int Size => 2;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> Lo(byte* step) => Avx2.UnpackLow(Vector256<ushort>.Zero, Vector256.Load((ushort*)step)).AsSingle();

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static Vector256<float> Hi(byte* step) => Avx2.UnpackHigh(Vector256<ushort>.Zero, Vector256.Load((ushort*)step)).AsSingle();
    }
}
