namespace LoraEngine.Tensors;

/// <summary>Argument checks shared by the kernel families: each throws an ArgumentException naming the parameter.</summary>
internal static class Check
{
    public static void DType(DeviceTensor t, DType expected, string name)
    {
        if (t.DType != expected) throw new ArgumentException($"{name} must be {expected}, got {t.DType}{t.ShapeString}", name);
    }

    public static void FloatWeight(DeviceTensor t, string name)
    {
        if (!t.DType.IsFloat()) throw new ArgumentException($"{name} must be F32, F16 or BF16, got {t.DType}", name);
    }

    /// <summary>Checks the exact shape; a dimension given as -1 matches anything.</summary>
    public static void Shape(DeviceTensor t, string name, params int[] expected)
    {
        bool ok = t.Rank == expected.Length;
        for (int i = 0; ok && i < expected.Length; i++) ok = expected[i] < 0 || t.Shape[i] == expected[i];
        if (!ok)
            throw new ArgumentException(
                $"{name} has shape {t.ShapeString}, expected [{string.Join(", ", expected.Select(d => d < 0 ? "*" : d.ToString()))}]", name);
    }

    public static void Rank(DeviceTensor t, int rank, string name)
    {
        if (t.Rank != rank) throw new ArgumentException($"{name} must have rank {rank}, got shape {t.ShapeString}", name);
    }

    public static void SameDevice(DeviceTensor t, ComputeDevice device, string name)
    {
        if (!ReferenceEquals(t.Device, device)) throw new ArgumentException($"{name} lives on another device ({t.Device})", name);
    }

    /// <summary>Throws when <paramref name="t"/> shares memory with <paramref name="other"/> (views of one buffer).</summary>
    public static void Disjoint(DeviceTensor t, string name, DeviceTensor other, string otherName)
    {
        if (t.Overlaps(other)) throw new ArgumentException($"{name} {t.ShapeString} overlaps {otherName} {other.ShapeString} in memory", name);
    }

    public static void Positive(int value, string name)
    {
        if (value <= 0) throw new ArgumentOutOfRangeException(name, value, $"{name} must be positive");
    }
}
