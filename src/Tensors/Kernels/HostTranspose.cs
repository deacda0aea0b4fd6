using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace LoraEngine.Tensors.Kernels;

/// <summary>
/// 16×16 F32 transposes in AVX-512 registers (unpack, in-lane shuffle, then two 128-bit lane shuffles); one element at
/// a time on machines without AVX-512.
/// </summary>
internal static unsafe class HostTranspose
{
    /// <summary>dst[j][i] = rows[i][j] for i, j &lt; 16 (dst may not alias rows).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Transpose16(Vector512<float>* rows, Vector512<float>* dst)
    {
        if (!HostGemm.Avx512)
        {
            float* src = (float*)rows, to = (float*)dst;
            for (int i = 0; i < 16; i++)
                for (int j = 0; j < 16; j++) to[j * 16 + i] = src[i * 16 + j];
            return;
        }
        // Interleave pairs of rows: t[2i] = (r[2i][0], r[2i+1][0], r[2i][1], r[2i+1][1] | same for each 128-bit lane).
        var t0 = Avx512F.UnpackLow(rows[0], rows[1]);
        var t1 = Avx512F.UnpackHigh(rows[0], rows[1]);
        var t2 = Avx512F.UnpackLow(rows[2], rows[3]);
        var t3 = Avx512F.UnpackHigh(rows[2], rows[3]);
        var t4 = Avx512F.UnpackLow(rows[4], rows[5]);
        var t5 = Avx512F.UnpackHigh(rows[4], rows[5]);
        var t6 = Avx512F.UnpackLow(rows[6], rows[7]);
        var t7 = Avx512F.UnpackHigh(rows[6], rows[7]);
        var t8 = Avx512F.UnpackLow(rows[8], rows[9]);
        var t9 = Avx512F.UnpackHigh(rows[8], rows[9]);
        var t10 = Avx512F.UnpackLow(rows[10], rows[11]);
        var t11 = Avx512F.UnpackHigh(rows[10], rows[11]);
        var t12 = Avx512F.UnpackLow(rows[12], rows[13]);
        var t13 = Avx512F.UnpackHigh(rows[12], rows[13]);
        var t14 = Avx512F.UnpackLow(rows[14], rows[15]);
        var t15 = Avx512F.UnpackHigh(rows[14], rows[15]);

        // Within each 128-bit lane, gather one column of four rows.
        var r0 = Avx512F.Shuffle(t0, t2, 0x44);
        var r1 = Avx512F.Shuffle(t0, t2, 0xEE);
        var r2 = Avx512F.Shuffle(t1, t3, 0x44);
        var r3 = Avx512F.Shuffle(t1, t3, 0xEE);
        var r4 = Avx512F.Shuffle(t4, t6, 0x44);
        var r5 = Avx512F.Shuffle(t4, t6, 0xEE);
        var r6 = Avx512F.Shuffle(t5, t7, 0x44);
        var r7 = Avx512F.Shuffle(t5, t7, 0xEE);
        var r8 = Avx512F.Shuffle(t8, t10, 0x44);
        var r9 = Avx512F.Shuffle(t8, t10, 0xEE);
        var r10 = Avx512F.Shuffle(t9, t11, 0x44);
        var r11 = Avx512F.Shuffle(t9, t11, 0xEE);
        var r12 = Avx512F.Shuffle(t12, t14, 0x44);
        var r13 = Avx512F.Shuffle(t12, t14, 0xEE);
        var r14 = Avx512F.Shuffle(t13, t15, 0x44);
        var r15 = Avx512F.Shuffle(t13, t15, 0xEE);

        // Move 128-bit lanes so each vector holds one column's four-row groups in order.
        t0 = Avx512F.Shuffle4x128(r0, r4, 0x88);
        t1 = Avx512F.Shuffle4x128(r1, r5, 0x88);
        t2 = Avx512F.Shuffle4x128(r2, r6, 0x88);
        t3 = Avx512F.Shuffle4x128(r3, r7, 0x88);
        t4 = Avx512F.Shuffle4x128(r0, r4, 0xDD);
        t5 = Avx512F.Shuffle4x128(r1, r5, 0xDD);
        t6 = Avx512F.Shuffle4x128(r2, r6, 0xDD);
        t7 = Avx512F.Shuffle4x128(r3, r7, 0xDD);
        t8 = Avx512F.Shuffle4x128(r8, r12, 0x88);
        t9 = Avx512F.Shuffle4x128(r9, r13, 0x88);
        t10 = Avx512F.Shuffle4x128(r10, r14, 0x88);
        t11 = Avx512F.Shuffle4x128(r11, r15, 0x88);
        t12 = Avx512F.Shuffle4x128(r8, r12, 0xDD);
        t13 = Avx512F.Shuffle4x128(r9, r13, 0xDD);
        t14 = Avx512F.Shuffle4x128(r10, r14, 0xDD);
        t15 = Avx512F.Shuffle4x128(r11, r15, 0xDD);

        dst[0] = Avx512F.Shuffle4x128(t0, t8, 0x88);
        dst[1] = Avx512F.Shuffle4x128(t1, t9, 0x88);
        dst[2] = Avx512F.Shuffle4x128(t2, t10, 0x88);
        dst[3] = Avx512F.Shuffle4x128(t3, t11, 0x88);
        dst[4] = Avx512F.Shuffle4x128(t4, t12, 0x88);
        dst[5] = Avx512F.Shuffle4x128(t5, t13, 0x88);
        dst[6] = Avx512F.Shuffle4x128(t6, t14, 0x88);
        dst[7] = Avx512F.Shuffle4x128(t7, t15, 0x88);
        dst[8] = Avx512F.Shuffle4x128(t0, t8, 0xDD);
        dst[9] = Avx512F.Shuffle4x128(t1, t9, 0xDD);
        dst[10] = Avx512F.Shuffle4x128(t2, t10, 0xDD);
        dst[11] = Avx512F.Shuffle4x128(t3, t11, 0xDD);
        dst[12] = Avx512F.Shuffle4x128(t4, t12, 0xDD);
        dst[13] = Avx512F.Shuffle4x128(t5, t13, 0xDD);
        dst[14] = Avx512F.Shuffle4x128(t6, t14, 0xDD);
        dst[15] = Avx512F.Shuffle4x128(t7, t15, 0xDD);
    }
}
