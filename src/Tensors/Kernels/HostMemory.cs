using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace LoraEngine.Tensors.Kernels;

/// <summary>Raw access to tensors in the CPU device's memory (native memory: no pinning needed).</summary>
internal static unsafe class HostMemory
{
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
}
