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

/// <summary>F16 through ILGPU.Half (System.Half is not supported inside kernels).</summary>
public struct F16Decoder : IWeightDecoder<ILGPU.Half>
{
    /// <inheritdoc/>
    public readonly float Decode(ILGPU.Half raw) => (float)raw;
}

internal static class WeightViews
{
    public static ArrayView<ILGPU.Half> AsHalf(this DeviceTensor t) => t.U16.Cast<ILGPU.Half>();
}
