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

    public static DeviceTensor Upload(ComputeDevice device, SafetensorsCheckpoint checkpoint, string name, DType? targetDType, params int[] expectedShape) =>
        Upload(device, checkpoint, name, targetDType, expectedShape, slice: null);

    /// <summary>
    /// Uploads tensor <paramref name="name"/>, checked against its whole <paramref name="expectedShape"/>, or only the
    /// <paramref name="slice"/> of it a tensor-parallel rank holds: rows (dimension 0, a contiguous run of the file) or
    /// columns (dimension 1, gathered row by row through a bounded staging buffer).
    /// </summary>
    public static DeviceTensor Upload(ComputeDevice device, SafetensorsCheckpoint checkpoint, string name, DType? targetDType, int[] expectedShape, WeightSlice? slice)
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
        var shape = (int[])expectedShape.Clone();
        if (slice is { } s)
        {
            if (expectedShape.Length != 2 || s.Dim is not (0 or 1) || s.Start < 0 || s.Count <= 0 || s.Start + s.Count > expectedShape[s.Dim])
                throw new ArgumentOutOfRangeException(nameof(slice), $"{s} is not a slice of tensor '{name}' [{string.Join(", ", expectedShape)}]");
            shape[s.Dim] = s.Count;
        }
        var bytes = checkpoint.GetBytes(name);
        var tensor = device.Allocate(target, shape);
        try
        {
            if (slice is not { Dim: 1 } columns)
            {
                long rowBytes = expectedShape.Length == 2 ? (long)expectedShape[1] * stored.Size() : 0;
                if (slice is { } rows) bytes = bytes.Slice(checked((int)(rows.Start * rowBytes)), checked((int)(rows.Count * rowBytes)));
                Copy(tensor, bytes, stored, target);
            }
            else
            {
                CopyColumns(tensor, bytes, expectedShape[1], columns, stored, target);
            }
            return tensor;
        }
        catch
        {
            tensor.Dispose();
            throw;
        }
    }

    /// <summary>tensor [rows, count] = the columns [start, start + count) of the stored [rows, width] matrix, a chunk of rows at a time.</summary>
    static void CopyColumns(DeviceTensor tensor, ReadOnlySpan<byte> bytes, int width, WeightSlice columns, DType stored, DType target)
    {
        int es = stored.Size(), rows = tensor.Dim(0), rowBytes = columns.Count * es;
        int chunkRows = Math.Max(1, ChunkElements / columns.Count);
        var staging = new byte[Math.Min(chunkRows, rows) * rowBytes];
        for (int r0 = 0; r0 < rows; r0 += chunkRows)
        {
            int n = Math.Min(chunkRows, rows - r0);
            for (int r = 0; r < n; r++)
                bytes.Slice(checked(((r0 + r) * width + columns.Start) * es), rowBytes).CopyTo(staging.AsSpan(r * rowBytes));
            Copy(tensor.Slice(r0, n), staging.AsSpan(0, n * rowBytes), stored, target);
        }
    }

    /// <summary>The stored elements <paramref name="bytes"/> into <paramref name="tensor"/>, converted when the dtypes differ.</summary>
    static void Copy(DeviceTensor tensor, ReadOnlySpan<byte> bytes, DType stored, DType target)
    {
        if (target != stored) CopyConverted(tensor, bytes, stored, target);
        else if (stored == DType.F32) tensor.CopyFrom(MemoryMarshal.Cast<byte, float>(bytes));
        else tensor.CopyFrom(MemoryMarshal.Cast<byte, ushort>(bytes));
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

/// <summary>The part of a 2-D weight a tensor-parallel rank holds: <paramref name="Count"/> rows (Dim 0) or columns (Dim 1) from <paramref name="Start"/>.</summary>
internal readonly record struct WeightSlice(int Dim, int Start, int Count);
