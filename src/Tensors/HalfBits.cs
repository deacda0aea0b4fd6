using System.Numerics.Tensors;
using System.Runtime.InteropServices;

namespace LoraEngine.Tensors;

/// <summary>Host-side conversions between F32 and the raw bits of BF16 / F16 values.</summary>
public static class HalfBits
{
    /// <summary>BF16 is the top 16 bits of an F32.</summary>
    public static float Bf16ToFloat(ushort bits) => BitConverter.Int32BitsToSingle(bits << 16);

    /// <summary>Round-to-nearest-even F32 → BF16 (as PyTorch does); NaN stays NaN.</summary>
    public static ushort FloatToBf16(float value)
    {
        uint u = BitConverter.SingleToUInt32Bits(value);
        if (float.IsNaN(value)) return (ushort)((u >> 16) | 0x40);
        uint rounding = 0x7FFF + ((u >> 16) & 1);
        return (ushort)((u + rounding) >> 16);
    }

    /// <summary>The F16 value with raw bits <paramref name="bits"/>, as F32 (exact).</summary>
    public static float F16ToFloat(ushort bits) => (float)BitConverter.UInt16BitsToHalf(bits);

    /// <summary>Round-to-nearest-even F32 → F16 bits; out of range becomes ±infinity, NaN stays NaN.</summary>
    public static ushort FloatToF16(float value) => BitConverter.HalfToUInt16Bits((Half)value);

    /// <summary>destination[i] = float(bits[i]) for BF16 bits, vectorised.</summary>
    public static void Bf16ToFloat(ReadOnlySpan<ushort> bits, Span<float> destination)
    {
        if (destination.Length < bits.Length) throw new ArgumentException("destination too short", nameof(destination));
        Span<uint> wide = MemoryMarshal.Cast<float, uint>(destination[..bits.Length]);
        TensorPrimitives.ConvertTruncating<ushort, uint>(bits, wide);
        TensorPrimitives.ShiftLeft<uint>(wide, 16, wide);
    }

    /// <summary>destination[i] = float(bits[i]) for F16 bits, vectorised.</summary>
    public static void F16ToFloat(ReadOnlySpan<ushort> bits, Span<float> destination) =>
        TensorPrimitives.ConvertToSingle(MemoryMarshal.Cast<ushort, Half>(bits), destination);

    /// <summary>Converts raw 16-bit values of <paramref name="dtype"/> to F32.</summary>
    public static void ToFloat(DType dtype, ReadOnlySpan<ushort> bits, Span<float> destination)
    {
        if (dtype == DType.BF16) Bf16ToFloat(bits, destination);
        else if (dtype == DType.F16) F16ToFloat(bits, destination);
        else throw new ArgumentException($"{dtype} is not a 16-bit float type", nameof(dtype));
    }

    /// <summary>Converts F32 values to raw 16-bit values of <paramref name="dtype"/> (round to nearest).</summary>
    public static ushort[] FromFloat(DType dtype, ReadOnlySpan<float> values)
    {
        var bits = new ushort[values.Length];
        for (int i = 0; i < values.Length; i++)
            bits[i] = dtype switch
            {
                DType.BF16 => FloatToBf16(values[i]),
                DType.F16 => FloatToF16(values[i]),
                _ => throw new ArgumentException($"{dtype} is not a 16-bit float type", nameof(dtype)),
            };
        return bits;
    }
}
