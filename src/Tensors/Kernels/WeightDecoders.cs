using ILGPU;

namespace LoraEngine.Tensors.Kernels;

/// <summary>
/// Turns a stored weight element into F32 inside a kernel. Kernels that read weights are generic over the
/// decoder, so each dtype gets its own specialised kernel with no branch in the inner loop.
/// </summary>
public interface IWeightDecoder<T> where T : unmanaged
{
    /// <summary>The element's value as F32.</summary>
    float Decode(T raw);
}

/// <summary>F32 weights: the value as it is.</summary>
public struct F32Decoder : IWeightDecoder<float>
{
    /// <inheritdoc/>
    public readonly float Decode(float raw) => raw;
}

/// <summary>BF16 is the top 16 bits of an F32.</summary>
public struct Bf16Decoder : IWeightDecoder<ushort>
{
    /// <inheritdoc/>
    public readonly float Decode(ushort raw) => Interop.IntAsFloat((uint)raw << 16);
}

/// <summary>
/// F16 decoded from its bits with integer operations, exactly (the conversion the hardware does): every device runs it,
/// where ILGPU.Half needs F16 support that OpenCL devices without cl_khr_fp16 (pocl's CPU device) lack.
/// </summary>
public struct F16Decoder : IWeightDecoder<ushort>
{
    /// <inheritdoc/>
    public readonly float Decode(ushort raw)
    {
        uint sign = (uint)(raw & 0x8000) << 16, exponent = (uint)(raw >> 10) & 0x1F, mantissa = (uint)raw & 0x3FF;
        if (exponent == 0)
        {
            float subnormal = mantissa * (1f / 16777216f); // zero and subnormals: mantissa · 2^-24, exact in F32
            return sign != 0 ? -subnormal : subnormal;
        }
        uint bits = exponent == 0x1F
            ? sign | 0x7F800000u | (mantissa << 13) | (mantissa != 0 ? 0x400000u : 0) // infinities; NaNs quieted, payload kept
            : sign | ((exponent + 112) << 23) | (mantissa << 13); // rebias 15 → 127
        return Interop.IntAsFloat(bits);
    }
}
