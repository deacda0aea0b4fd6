using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace LoraEngine.Tensors.Kernels;

/// <summary>Raw access to tensors in the CPU device's memory (native memory: no pinning needed), and per-thread scratch.</summary>
internal static unsafe class HostMemory
{
    [ThreadStatic] static float[]? t_row;

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
