using System.Runtime.InteropServices;
using System.Text.Json;
using LoraEngine.Tensors;

namespace LoraEngine.Models.Safetensors;

/// <summary>Writes safetensors files (tests build tiny models, adapters and bad files with it).</summary>
public static class SafetensorsWriter
{
    /// <summary>
    /// Writes <paramref name="tensors"/> in order (data back to back, header padded with spaces to 8 bytes, as the reference
    /// writer does). Nothing is checked: shapes and byte counts that disagree are written as given, so tests can build bad files.
    /// </summary>
    /// <param name="path">the file to create or overwrite</param>
    /// <param name="tensors">name, safetensors dtype name ("F32", "BF16", ...), shape and raw little-endian bytes of each tensor</param>
    /// <param name="metadata">the header's <c>__metadata__</c>, left out when null or empty</param>
    public static void Write(string path, IEnumerable<(string Name, string DType, long[] Shape, byte[] Data)> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var list = tensors.ToList();
        using var header = new MemoryStream();
        using (var json = new Utf8JsonWriter(header))
        {
            json.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                json.WriteStartObject("__metadata__");
                foreach (var (k, v) in metadata) json.WriteString(k, v);
                json.WriteEndObject();
            }
            long offset = 0;
            foreach (var (name, dtype, shape, data) in list)
            {
                json.WriteStartObject(name);
                json.WriteString("dtype", dtype);
                json.WriteStartArray("shape");
                foreach (var d in shape) json.WriteNumberValue(d);
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                json.WriteNumberValue(offset + data.Length);
                json.WriteEndArray();
                json.WriteEndObject();
                offset += data.Length;
            }
            json.WriteEndObject();
        }
        // Pad the header with spaces to 8 bytes, as the reference writer does.
        while (header.Length % 8 != 0) header.WriteByte((byte)' ');
        using var file = File.Create(path);
        Span<byte> len = stackalloc byte[8];
        System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)header.Length);
        file.Write(len);
        header.Position = 0;
        header.CopyTo(file);
        foreach (var t in list) file.Write(t.Data);
    }

    /// <summary>F32 values stored as F32, F16 or BF16 (rounded to nearest).</summary>
    public static (string Name, string DType, long[] Shape, byte[] Data) Tensor(string name, float[] values, DType dtype, params long[] shape)
    {
        byte[] data = dtype switch
        {
            DType.F32 => MemoryMarshal.AsBytes(values.AsSpan()).ToArray(),
            DType.F16 or DType.BF16 => MemoryMarshal.AsBytes(HalfBits.FromFloat(dtype, values).AsSpan()).ToArray(),
            _ => throw new ArgumentException($"{dtype} is not a float type", nameof(dtype)),
        };
        string name2 = dtype switch { DType.F32 => "F32", DType.F16 => "F16", _ => "BF16" };
        return (name, name2, shape, data);
    }

}
