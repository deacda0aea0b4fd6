namespace LoraEngine.Tensors;

/// <summary>Element types of device tensors. Weights may be F32, F16 or BF16; activations are F32; indices are I32.</summary>
public enum DType
{
    /// <summary>32-bit IEEE float.</summary>
    F32,
    /// <summary>16-bit IEEE half, stored as raw ushort bits.</summary>
    F16,
    /// <summary>bfloat16 (the top 16 bits of an F32), stored as raw ushort bits.</summary>
    BF16,
    /// <summary>32-bit signed integer (token ids, positions, block tables).</summary>
    I32,
}

/// <summary>Sizes, categories and names of <see cref="DType"/>s.</summary>
public static class DTypeExtensions
{
    /// <summary>Bytes per element.</summary>
    public static int Size(this DType dtype) => dtype switch
    {
        DType.F32 or DType.I32 => 4,
        DType.F16 or DType.BF16 => 2,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "unknown dtype"),
    };

    /// <summary>True for the 16-bit float types, stored on the device as raw <c>ushort</c> bits.</summary>
    public static bool Is16Bit(this DType dtype) => dtype is DType.F16 or DType.BF16;

    /// <summary>True for the float types a weight may have.</summary>
    public static bool IsFloat(this DType dtype) => dtype is DType.F32 or DType.F16 or DType.BF16;

    /// <summary>Parses a name as used by configs and command lines ("float32", "bf16", "half", ...).</summary>
    public static DType Parse(string name) => name.ToLowerInvariant() switch
    {
        "f32" or "float32" or "float" or "fp32" => DType.F32,
        "f16" or "float16" or "half" or "fp16" => DType.F16,
        "bf16" or "bfloat16" => DType.BF16,
        "i32" or "int32" => DType.I32,
        _ => throw new ArgumentException($"unknown dtype '{name}' (expected float32, float16 or bfloat16)", nameof(name)),
    };
}
