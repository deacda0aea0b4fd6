using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace LoraEngine.Bench.Tensors;

/// <summary>
/// The CPU's own limits, measured in-process so a kernel's figure can be given as a ratio to them: read bandwidth
/// over a 1 GiB buffer (as the llama.cpp peer's membw.c measures it, here on transparent huge pages like the CPU
/// device's weights) and the F32 FMA peak, each on 1..N threads.
/// </summary>
public static unsafe class CpuLimits
{
    /// <summary>Best of five: bytes read per second by <paramref name="threads"/> threads each summing its part of a buffer.</summary>
    public static double ReadGBps(int threads, long bytes = 1L << 30)
    {
        byte* buffer = (byte*)NativeMemory.AlignedAlloc((nuint)bytes, 2 << 20);
        try
        {
            // On huge pages where Linux allows it, as the CPU device keeps its weights (the machine's best read rate).
            if (OperatingSystem.IsLinux()) _ = madvise((nint)buffer, (nuint)bytes, MadvHugePage);
            new Span<byte>(buffer, (int)Math.Min(bytes, int.MaxValue)).Fill(1);
            if (bytes > int.MaxValue) new Span<byte>(buffer + int.MaxValue, (int)(bytes - int.MaxValue)).Fill(1);
            double best = 0;
            for (int rep = 0; rep < 5; rep++)
            {
                long part = bytes / threads / 256 * 256;
                var sw = Stopwatch.StartNew();
                Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads },
                    t => Sink(Vector512.IsHardwareAccelerated ? Read(buffer + t * part, part) : Read256(buffer + t * part, part)));
                best = Math.Max(best, part * threads / sw.Elapsed.TotalSeconds / 1e9);
            }
            return best;
        }
        finally
        {
            NativeMemory.AlignedFree(buffer);
        }
    }

    /// <summary>
    /// Best of three: F32 FLOP/s of independent FMA chains on <paramref name="threads"/> threads (2 FLOP per lane), in the
    /// widest vectors the machine has in hardware (Vector512 on AVX2 machines is two halves in software: not a peak).
    /// </summary>
    public static double FmaGFlops(int threads)
    {
        const long iterations = 20_000_000;
        bool wide = Vector512.IsHardwareAccelerated;
        int lanes = wide ? Vector512<float>.Count : Vector256<float>.Count;
        Fma(1000);
        Fma256(1000);
        double best = 0;
        for (int rep = 0; rep < 3; rep++)
        {
            var sw = Stopwatch.StartNew();
            Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, _ => Sink(wide ? Fma(iterations) : Fma256(iterations)));
            best = Math.Max(best, threads * iterations * 12.0 * lanes * 2 / sw.Elapsed.TotalSeconds / 1e9);
        }
        return best;
    }

    const int MadvHugePage = 14;

    [DllImport("libc")]
    static extern int madvise(nint address, nuint length, int advice);

    [MethodImpl(MethodImplOptions.NoInlining)]
    static void Sink(float value) => GC.KeepAlive(value);

    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    static float Read(byte* p, long bytes)
    {
        Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
        for (byte* end = p + bytes; p < end; p += 256)
        {
            a0 += Vector512.Load((float*)p);
            a1 += Vector512.Load((float*)(p + 64));
            a2 += Vector512.Load((float*)(p + 128));
            a3 += Vector512.Load((float*)(p + 192));
        }
        return Vector512.Sum(a0 + a1 + a2 + a3);
    }

    /// <summary><see cref="Read"/> in 32-byte vectors, for machines without AVX-512.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    static float Read256(byte* p, long bytes)
    {
        Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
        for (byte* end = p + bytes; p < end; p += 128)
        {
            a0 += Vector256.Load((float*)p);
            a1 += Vector256.Load((float*)(p + 32));
            a2 += Vector256.Load((float*)(p + 64));
            a3 += Vector256.Load((float*)(p + 96));
        }
        return Vector256.Sum(a0 + a1 + a2 + a3);
    }

    /// <summary><see cref="Fma"/> in 32-byte vectors, for machines without AVX-512.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    static float Fma256(long iterations)
    {
        var m = Vector256.Create(0.999999f);
        var c = Vector256.Create(1e-7f);
        Vector256<float> a0 = Vector256.Create(1f), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0;
        for (long i = 0; i < iterations; i++)
        {
            a0 = Vector256.FusedMultiplyAdd(a0, m, c);
            a1 = Vector256.FusedMultiplyAdd(a1, m, c);
            a2 = Vector256.FusedMultiplyAdd(a2, m, c);
            a3 = Vector256.FusedMultiplyAdd(a3, m, c);
            a4 = Vector256.FusedMultiplyAdd(a4, m, c);
            a5 = Vector256.FusedMultiplyAdd(a5, m, c);
            a6 = Vector256.FusedMultiplyAdd(a6, m, c);
            a7 = Vector256.FusedMultiplyAdd(a7, m, c);
            a8 = Vector256.FusedMultiplyAdd(a8, m, c);
            a9 = Vector256.FusedMultiplyAdd(a9, m, c);
            a10 = Vector256.FusedMultiplyAdd(a10, m, c);
            a11 = Vector256.FusedMultiplyAdd(a11, m, c);
        }
        return Vector256.Sum(a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11);
    }

    /// <summary>12 independent FMA chains: more than latency × FMA pipes, so the pipes stay full.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    static float Fma(long iterations)
    {
        var m = Vector512.Create(0.999999f);
        var c = Vector512.Create(1e-7f);
        Vector512<float> a0 = Vector512.Create(1f), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0, a9 = a0, a10 = a0, a11 = a0;
        for (long i = 0; i < iterations; i++)
        {
            a0 = Vector512.FusedMultiplyAdd(a0, m, c);
            a1 = Vector512.FusedMultiplyAdd(a1, m, c);
            a2 = Vector512.FusedMultiplyAdd(a2, m, c);
            a3 = Vector512.FusedMultiplyAdd(a3, m, c);
            a4 = Vector512.FusedMultiplyAdd(a4, m, c);
            a5 = Vector512.FusedMultiplyAdd(a5, m, c);
            a6 = Vector512.FusedMultiplyAdd(a6, m, c);
            a7 = Vector512.FusedMultiplyAdd(a7, m, c);
            a8 = Vector512.FusedMultiplyAdd(a8, m, c);
            a9 = Vector512.FusedMultiplyAdd(a9, m, c);
            a10 = Vector512.FusedMultiplyAdd(a10, m, c);
            a11 = Vector512.FusedMultiplyAdd(a11, m, c);
        }
        return Vector512.Sum(a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11);
    }
}
