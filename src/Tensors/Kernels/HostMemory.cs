using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using ILGPU.Runtime;

namespace LoraEngine.Tensors.Kernels;

/// <summary>Raw access to tensors in the CPU device's memory (native memory: no pinning needed), and per-thread scratch.</summary>
internal static unsafe class HostMemory
{
    const int HugePage = 2 << 20;
    const int MadvHugePage = 14;

    [ThreadStatic] static float[]? t_row;

    /// <summary>
    /// Asks Linux to back the whole 2 MB pages inside a freshly allocated buffer with transparent huge pages (before
    /// anything touches it): weights stream through far fewer TLB entries (a decoder layer's linears at one token,
    /// ~47 → ~55 GB/s in alternating runs on a 2-core AVX-512 machine). Only advice: elsewhere, or where the kernel
    /// declines, the buffer keeps its small pages.
    /// </summary>
    public static void AdviseHugePages(MemoryBuffer buffer)
    {
        if (!OperatingSystem.IsLinux() || buffer.LengthInBytes < 2 * HugePage) return;
        nint start = buffer.NativePtr, first = (start + HugePage - 1) & ~(nint)(HugePage - 1);
        long length = (buffer.LengthInBytes - (first - start)) & ~(long)(HugePage - 1);
        if (length > 0) _ = madvise(first, (nuint)length, MadvHugePage);
    }

    [DllImport("libc", EntryPoint = "madvise")]
    static extern int madvise(nint address, nuint length, int advice);

    /// <summary>The first element of a float tensor (F32, or BF16/F16 bits); valid while the tensor lives.</summary>
    public static byte* Pointer(DeviceTensor t) => t.DType == DType.F32
        ? (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(t.HostSpan<float>()))
        : (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(t.HostSpan<ushort>()));

    /// <summary>Element k of a row of F32, BF16 or F16 weights, as F32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float WeightAt(byte* row, DType type, int k) => type switch
    {
        DType.F32 => ((float*)row)[k],
        DType.BF16 => BitConverter.Int32BitsToSingle(((ushort*)row)[k] << 16),
        _ => (float)BitConverter.UInt16BitsToHalf(((ushort*)row)[k]),
    };

    /// <summary>The <paramref name="length"/> weights from element <paramref name="offset"/> of a float weight tensor as F32 (a copy for F16/BF16).</summary>
    public static ReadOnlySpan<float> WeightRow(DeviceTensor weight, long offset, int length, Span<float> scratch)
    {
        if (weight.DType == DType.F32) return weight.HostSpan<float>().Slice(checked((int)offset), length);
        HalfBits.ToFloat(weight.DType, weight.HostSpan<ushort>().Slice(checked((int)offset), length), scratch[..length]);
        return scratch[..length];
    }

    /// <summary>A per-thread F32 buffer of at least <paramref name="length"/> elements (contents undefined).</summary>
    public static Span<float> ScratchRow(int length)
    {
        if (t_row == null || t_row.Length < length) t_row = new float[Math.Max(length, 4096)];
        return t_row.AsSpan(0, length);
    }
}
