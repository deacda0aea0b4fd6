using LoraEngine.Tensors;

namespace LoraEngine.Models.Safetensors;

/// <summary>A tensor's header entry: dtype as written in the file, shape, and byte range within the data section.</summary>
/// <param name="Name">The tensor's name in the header.</param>
/// <param name="DType">The safetensors dtype name ("F32", "F16", "BF16", "I64", ...).</param>
/// <param name="Shape">Dimensions, outermost first; empty for a scalar.</param>
/// <param name="Offset">Where the data starts, in bytes from the start of the data section.</param>
/// <param name="Length">The data's length in bytes.</param>
public sealed record TensorInfo(string Name, string DType, long[] Shape, long Offset, long Length)
{
    /// <summary>The product of <see cref="Shape"/> (1 for a scalar).</summary>
    public long ElementCount => Shape.Aggregate(1L, (a, b) => a * b);

    /// <summary>The tensor layer's dtype for F32/F16/BF16/I32; throws for others.</summary>
    public DType ToDType() => DType switch
    {
        "F32" => Tensors.DType.F32,
        "F16" => Tensors.DType.F16,
        "BF16" => Tensors.DType.BF16,
        "I32" => Tensors.DType.I32,
        _ => throw new NotSupportedException($"tensor '{Name}' has dtype {DType}, which the device does not hold"),
    };

    /// <summary>Bytes per element of a safetensors dtype name, or 0 when unknown.</summary>
    public static int ElementSize(string dtype) => dtype switch
    {
        "F64" or "I64" or "U64" => 8,
        "F32" or "I32" or "U32" => 4,
        "F16" or "BF16" or "I16" or "U16" => 2,
        "I8" or "U8" or "BOOL" or "F8_E4M3" or "F8_E5M2" => 1,
        _ => 0,
    };
}
