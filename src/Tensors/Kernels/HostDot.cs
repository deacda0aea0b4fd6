using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace LoraEngine.Tensors.Kernels;

/// <summary>The fixed lane order in which the CPU device's dot products sum their 16-lane accumulators.</summary>
internal static class HostDot
{
    /// <summary>
    /// Σ v[i] as a halving tree: s8[i] = v[i] + v[i+8], s4[i] = s8[i] + s8[i+4], s2[i] = s4[i] + s4[i+2], s2[0] + s2[1].
    /// Every path that computes an output uses this order, so the result does not depend on the path.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Reduce(Vector512<float> v)
    {
        var s8 = v.GetLower() + v.GetUpper();
        var s4 = s8.GetLower() + s8.GetUpper();
        var s2 = s4 + Vector128.Shuffle(s4, Vector128.Create(2, 3, 0, 1));
        return s2.ToScalar() + s2.GetElement(1);
    }

    /// <summary>
    /// result[i] = Reduce(*acc[i]) for i &lt; 16, bit for bit, in 15 adds and 30 shuffles instead of 16 separate trees:
    /// each step adds the halves of two accumulators at once (lanes 0–7 + 8–15, then 0–3 + 4–7, …). Without AVX-512,
    /// the 16 trees one by one.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static unsafe Vector512<float> Reduce16(Vector512<float>** acc) =>
        Reduce16(*acc[0], *acc[1], *acc[2], *acc[3], *acc[4], *acc[5], *acc[6], *acc[7],
            *acc[8], *acc[9], *acc[10], *acc[11], *acc[12], *acc[13], *acc[14], *acc[15]);

    /// <summary>result[i] = Reduce(a_i) for i &lt; 16, bit for bit (see <see cref="Reduce16(Vector512{float}**)"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Reduce16(
        Vector512<float> a0, Vector512<float> a1, Vector512<float> a2, Vector512<float> a3,
        Vector512<float> a4, Vector512<float> a5, Vector512<float> a6, Vector512<float> a7,
        Vector512<float> a8, Vector512<float> a9, Vector512<float> a10, Vector512<float> a11,
        Vector512<float> a12, Vector512<float> a13, Vector512<float> a14, Vector512<float> a15)
    {
        if (!HostGemm.Avx512) return ReduceEach(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15);
        // The tree leaves lane 4j + m holding input 4m + j, so input p is taken from accumulator 4(p % 4) + p / 4.
        var c0 = HalfSums(a0, a4);
        var c1 = HalfSums(a8, a12);
        var c2 = HalfSums(a1, a5);
        var c3 = HalfSums(a9, a13);
        var c4 = HalfSums(a2, a6);
        var c5 = HalfSums(a10, a14);
        var c6 = HalfSums(a3, a7);
        var c7 = HalfSums(a11, a15);
        // s4 of four inputs per vector, one per 128-bit lane.
        var d0 = Avx512F.Shuffle4x128(c0, c1, 0x88) + Avx512F.Shuffle4x128(c0, c1, 0xDD);
        var d1 = Avx512F.Shuffle4x128(c2, c3, 0x88) + Avx512F.Shuffle4x128(c2, c3, 0xDD);
        var d2 = Avx512F.Shuffle4x128(c4, c5, 0x88) + Avx512F.Shuffle4x128(c4, c5, 0xDD);
        var d3 = Avx512F.Shuffle4x128(c6, c7, 0x88) + Avx512F.Shuffle4x128(c6, c7, 0xDD);
        // s2, two lanes per input.
        var e0 = Avx512F.Shuffle(d0, d1, 0x44) + Avx512F.Shuffle(d0, d1, 0xEE);
        var e1 = Avx512F.Shuffle(d2, d3, 0x44) + Avx512F.Shuffle(d2, d3, 0xEE);
        // s2[0] + s2[1].
        return Avx512F.Shuffle(e0, e1, 0x88) + Avx512F.Shuffle(e0, e1, 0xDD);
    }

    /// <summary>Reduce16 without AVX-512's 16-lane shuffles: each input's tree alone.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    static Vector512<float> ReduceEach(
        Vector512<float> a0, Vector512<float> a1, Vector512<float> a2, Vector512<float> a3,
        Vector512<float> a4, Vector512<float> a5, Vector512<float> a6, Vector512<float> a7,
        Vector512<float> a8, Vector512<float> a9, Vector512<float> a10, Vector512<float> a11,
        Vector512<float> a12, Vector512<float> a13, Vector512<float> a14, Vector512<float> a15) =>
        Vector512.Create(Reduce(a0), Reduce(a1), Reduce(a2), Reduce(a3), Reduce(a4), Reduce(a5), Reduce(a6), Reduce(a7),
            Reduce(a8), Reduce(a9), Reduce(a10), Reduce(a11), Reduce(a12), Reduce(a13), Reduce(a14), Reduce(a15));

    /// <summary>Lanes 0–7: a[i] + a[i+8]; lanes 8–15: b[i] + b[i+8].</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector512<float> HalfSums(Vector512<float> a, Vector512<float> b) =>
        Avx512F.Shuffle4x128(a, b, 0x44) + Avx512F.Shuffle4x128(a, b, 0xEE);
}
