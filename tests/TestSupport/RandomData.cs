using LoraEngine.Tensors;

namespace LoraEngine.TestSupport;

/// <summary>Deterministic random test data from a seed.</summary>
public sealed class RandomData(int seed)
{
    readonly Random _random = new(seed);

    public Random Random => _random;

    public int Int(int minInclusive, int maxInclusive) => _random.Next(minInclusive, maxInclusive + 1);

    /// <summary>Uniform values in [-scale, scale).</summary>
    public float[] Floats(long n, float scale = 1f)
    {
        var a = new float[n];
        for (long i = 0; i < n; i++) a[i] = (float)((_random.NextDouble() * 2 - 1) * scale);
        return a;
    }

    public int[] Ints(int n, int minInclusive, int maxExclusive)
    {
        var a = new int[n];
        for (int i = 0; i < n; i++) a[i] = _random.Next(minInclusive, maxExclusive);
        return a;
    }

    public DType WeightType() => (DType)_random.Next(0, 3);

    /// <summary>
    /// Uploads <paramref name="values"/> as <paramref name="dtype"/>, and returns the values the device really holds
    /// (rounded to the dtype) so references can use them.
    /// </summary>
    public static (DeviceTensor Tensor, float[] Stored) UploadWeight(ComputeDevice device, float[] values, DType dtype, params int[] shape)
    {
        if (dtype == DType.F32) return (device.Upload(values, shape), values);
        var bits = HalfBits.FromFloat(dtype, values);
        var stored = new float[values.Length];
        HalfBits.ToFloat(dtype, bits, stored);
        return (device.Upload<ushort>(bits, dtype, shape), stored);
    }
}
