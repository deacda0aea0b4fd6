using System.Runtime.InteropServices;
using LoraEngine.Models.Safetensors;
using LoraEngine.Tensors;

namespace LoraEngine.Models.Llama;

/// <summary>
/// Streams checkpoint tensors from the memory map to the device. A tensor kept in its stored dtype is copied
/// straight from the map; a converted one goes through a bounded chunk buffer, so loading never holds a
/// second full copy of the model on the host.
/// </summary>
internal static class WeightUploader
{
    const int ChunkElements = 1 << 20;

    public static DeviceTensor Upload(ComputeDevice device, SafetensorsCheckpoint checkpoint, string name, DType? targetDType, params int[] expectedShape)
    {
        if (!checkpoint.Contains(name)) throw new InvalidDataException($"{checkpoint.Describe(name)}: tensor '{name}' is missing");
        var info = checkpoint.Info(name);
        if (!info.Shape.Select(d => (int)d).SequenceEqual(expectedShape))
            throw new InvalidDataException($"{checkpoint.Describe(name)}: tensor '{name}' has shape [{string.Join(", ", info.Shape)}], expected [{string.Join(", ", expectedShape)}]");
        DType stored = info.DType switch
        {
            "F32" => DType.F32,
            "F16" => DType.F16,
            "BF16" => DType.BF16,
            _ => throw new InvalidDataException($"{checkpoint.Describe(name)}: tensor '{name}' has dtype {info.DType}; weights must be F32, F16 or BF16"),
        };
        DType target = targetDType ?? stored;
        var bytes = checkpoint.GetBytes(name);
        var tensor = device.Allocate(target, expectedShape);
        try
        {
            if (target == stored)
            {
                if (stored == DType.F32) tensor.CopyFrom(MemoryMarshal.Cast<byte, float>(bytes));
                else tensor.CopyFrom(MemoryMarshal.Cast<byte, ushort>(bytes));
            }
            else
            {
                CopyConverted(tensor, bytes, stored, target);
            }
            return tensor;
        }
        catch
        {
            tensor.Dispose();
            throw;
        }
    }

    static void CopyConverted(DeviceTensor tensor, ReadOnlySpan<byte> bytes, DType stored, DType target)
    {
        // Work on a flat view so chunks can cut anywhere.
        var flat = tensor.Reshape((int)tensor.Length);
        long n = tensor.Length;
        var floats = new float[Math.Min(ChunkElements, n)];
        var bits = target.Is16Bit() ? new ushort[floats.Length] : null;
        for (long start = 0; start < n; start += ChunkElements)
        {
            int count = (int)Math.Min(ChunkElements, n - start);
            var chunk = floats.AsSpan(0, count);
            var src = bytes.Slice(checked((int)(start * stored.Size())), count * stored.Size());
            if (stored == DType.F32) MemoryMarshal.Cast<byte, float>(src).CopyTo(chunk);
            else HalfBits.ToFloat(stored, MemoryMarshal.Cast<byte, ushort>(src), chunk);

            var dst = flat.Slice((int)start, count);
            if (target == DType.F32)
            {
                dst.CopyFrom<float>(chunk);
            }
            else
            {
                var converted = HalfBits.FromFloat(target, chunk);
                converted.CopyTo(bits!, 0);
                dst.CopyFrom<ushort>(bits.AsSpan(0, count));
            }
        }
    }
}
