using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace LoraEngine.Tensors.Kernels;

/// <summary>
/// <see cref="HostGemm"/>'s register tiles: a row tile streaming BF16/F32 rows in place for up to 6 tokens (decode), a
/// packed tile of 4 rows × up to 6 tokens over panels (prefill), and the conversions from the stored weight types.
/// </summary>
internal static unsafe partial class HostGemm
{
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
        for (; k <= count - 16; k += 16) Vector512.Store(WidenBf16((ushort*)src + k), dst + k);
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
}
