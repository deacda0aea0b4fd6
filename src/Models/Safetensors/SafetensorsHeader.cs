using System.Text.Json;

namespace LoraEngine.Models.Safetensors;

/// <summary>
/// Parses and validates an untrusted safetensors header: valid JSON object, known dtypes, no duplicate names,
/// byte sizes equal to shape × dtype size (overflow-checked), offsets inside the data section, contiguous and
/// non-overlapping. Every fault is an <see cref="InvalidDataException"/> naming the file and the tensor.
/// </summary>
internal static class SafetensorsHeader
{
    /// <summary>Largest header accepted (the reference implementation's limit).</summary>
    public const long MaxHeaderBytes = 100_000_000;

    public static (Dictionary<string, TensorInfo> Tensors, Dictionary<string, string> Metadata) Parse(ReadOnlySpan<byte> json, long dataLength, string file)
    {
        var tensors = new Dictionary<string, TensorInfo>(StringComparer.Ordinal);
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        var reader = new Utf8JsonReader(json, new JsonReaderOptions { MaxDepth = 8 });
        try
        {
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject) throw Fault(file, null, "the header is not a JSON object");
            while (reader.Read() && reader.TokenType != JsonTokenType.EndObject)
            {
                if (reader.TokenType != JsonTokenType.PropertyName) throw Fault(file, null, "malformed header");
                string name = reader.GetString()!;
                if (tensors.ContainsKey(name) || (name == "__metadata__" && metadata.Count > 0)) throw Fault(file, name, "duplicate entry");
                if (!reader.Read()) throw Fault(file, name, "truncated header");
                if (name == "__metadata__") ReadMetadata(ref reader, metadata, file);
                else tensors[name] = ReadTensor(ref reader, name, file);
            }
            if (reader.TokenType != JsonTokenType.EndObject) throw Fault(file, null, "truncated header");
            if (reader.Read()) throw Fault(file, null, "trailing data after the header object");
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException or ArgumentException)
        {
            // Invalid UTF-8 or an unexpected token surfaces as InvalidOperationException from Utf8JsonReader.
            throw new InvalidDataException($"{file}: the header is not valid JSON ({e.Message})", e);
        }
        CheckLayout(tensors, dataLength, file);
        return (tensors, metadata);
    }

    static void ReadMetadata(ref Utf8JsonReader reader, Dictionary<string, string> metadata, string file)
    {
        if (reader.TokenType != JsonTokenType.StartObject) throw Fault(file, "__metadata__", "must be an object of strings");
        while (reader.Read() && reader.TokenType != JsonTokenType.EndObject)
        {
            string key = reader.GetString()!;
            if (!reader.Read() || reader.TokenType != JsonTokenType.String) throw Fault(file, "__metadata__", $"value of '{key}' must be a string");
            metadata[key] = reader.GetString()!;
        }
    }

    static TensorInfo ReadTensor(ref Utf8JsonReader reader, string name, string file)
    {
        if (reader.TokenType != JsonTokenType.StartObject) throw Fault(file, name, "entry must be an object");
        string? dtype = null;
        List<long>? shape = null;
        long[]? offsets = null;
        while (reader.Read() && reader.TokenType != JsonTokenType.EndObject)
        {
            string key = reader.GetString()!;
            if (!reader.Read()) throw Fault(file, name, "truncated entry");
            switch (key)
            {
                case "dtype":
                    if (reader.TokenType != JsonTokenType.String) throw Fault(file, name, "dtype must be a string");
                    dtype = reader.GetString();
                    break;
                case "shape":
                    shape = ReadLongs(ref reader, name, file, "shape");
                    break;
                case "data_offsets":
                    offsets = ReadLongs(ref reader, name, file, "data_offsets").ToArray();
                    break;
                default:
                    reader.Skip();
                    break;
            }
        }
        if (dtype is null || shape is null || offsets is null) throw Fault(file, name, "entry needs dtype, shape and data_offsets");
        int size = TensorInfo.ElementSize(dtype);
        if (size == 0) throw Fault(file, name, $"unknown dtype '{dtype}'");
        if (offsets.Length != 2 || offsets[0] < 0 || offsets[1] < offsets[0]) throw Fault(file, name, $"bad data_offsets [{string.Join(", ", offsets)}]");
        long count = 1;
        foreach (long d in shape)
        {
            if (d < 0) throw Fault(file, name, "negative dimension");
            try
            {
                count = checked(count * d);
            }
            catch (OverflowException)
            {
                throw Fault(file, name, "shape overflows");
            }
        }
        long bytes;
        try
        {
            bytes = checked(count * size);
        }
        catch (OverflowException)
        {
            throw Fault(file, name, "byte size overflows");
        }
        if (offsets[1] - offsets[0] != bytes)
            throw Fault(file, name, $"data_offsets span {offsets[1] - offsets[0]} bytes but {dtype}[{string.Join(", ", shape)}] needs {bytes}");
        return new TensorInfo(name, dtype, shape.ToArray(), offsets[0], bytes);
    }

    static List<long> ReadLongs(ref Utf8JsonReader reader, string name, string file, string field)
    {
        if (reader.TokenType != JsonTokenType.StartArray) throw Fault(file, name, $"{field} must be an array of integers");
        var values = new List<long>();
        while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
        {
            if (reader.TokenType != JsonTokenType.Number || !reader.TryGetInt64(out long v)) throw Fault(file, name, $"{field} must hold integers");
            if (values.Count >= 16) throw Fault(file, name, $"{field} has too many entries");
            values.Add(v);
        }
        return values;
    }

    /// <summary>Sorted by offset, the tensors must tile the data section exactly: no gap, no overlap, nothing past the end.</summary>
    static void CheckLayout(Dictionary<string, TensorInfo> tensors, long dataLength, string file)
    {
        long expected = 0;
        foreach (var t in tensors.Values.OrderBy(t => t.Offset).ThenBy(t => t.Length))
        {
            if (t.Offset != expected)
                throw Fault(file, t.Name, t.Offset < expected ? "overlaps the previous tensor" : $"leaves a gap before offset {t.Offset}");
            if (t.Offset + t.Length > dataLength) throw Fault(file, t.Name, $"data [{t.Offset}, {t.Offset + t.Length}) lies outside the file's {dataLength} data bytes");
            expected = t.Offset + t.Length;
        }
        if (expected != dataLength) throw Fault(file, null, $"the data section has {dataLength} bytes but the tensors cover {expected}");
    }

    public static InvalidDataException Fault(string file, string? tensor, string what) =>
        new(tensor is null ? $"{file}: {what}" : $"{file}: tensor '{tensor}': {what}");
}
