using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;
using LoraEngine.Tensors;

namespace LoraEngine.Models.Safetensors;

/// <summary>
/// A memory-mapped safetensors file. The header is untrusted and fully validated on open; tensor data is
/// read straight from the map, so loading holds no second copy on the host.
/// </summary>
public sealed unsafe class SafetensorsFile : IDisposable
{
    readonly MemoryMappedFile? _map;
    readonly MemoryMappedViewAccessor? _view;
    readonly byte* _base;
    readonly long _dataStart;
    bool _disposed;

    SafetensorsFile(string path, MemoryMappedFile? map, MemoryMappedViewAccessor? view, byte* basePtr, long dataStart,
        Dictionary<string, TensorInfo> tensors, Dictionary<string, string> metadata)
    {
        Path = path;
        _map = map;
        _view = view;
        _base = basePtr;
        _dataStart = dataStart;
        Tensors = tensors;
        Metadata = metadata;
    }

    /// <summary>The file's path, as given to <see cref="Open"/>.</summary>
    public string Path { get; }

    /// <summary>The header: tensor name → entry (validated: dtype, shape and byte range agree and lie inside the data).</summary>
    public IReadOnlyDictionary<string, TensorInfo> Tensors { get; }

    /// <summary>The header's <c>__metadata__</c> strings (empty when it has none).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>Opens and validates a file; any fault in it is an InvalidDataException naming the file and tensor.</summary>
    public static SafetensorsFile Open(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        long length = new FileInfo(path).Length; // FileNotFoundException for a missing file
        if (length < 8) throw new InvalidDataException($"{path}: {length} bytes is too short for a safetensors file");
        MemoryMappedFile map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        MemoryMappedViewAccessor? view = null;
        bool acquired = false;
        try
        {
            view = map.CreateViewAccessor(0, length, MemoryMappedFileAccess.Read);
            byte* ptr = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref ptr);
            acquired = true;
            ptr += view.PointerOffset;

            ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(new ReadOnlySpan<byte>(ptr, 8));
            if (headerLength > SafetensorsHeader.MaxHeaderBytes)
                throw new InvalidDataException($"{path}: header length {headerLength} exceeds the {SafetensorsHeader.MaxHeaderBytes}-byte limit");
            if ((long)headerLength > length - 8)
                throw new InvalidDataException($"{path}: header length {headerLength} runs past the end of the {length}-byte file");
            long dataStart = 8 + (long)headerLength;
            var (tensors, metadata) = SafetensorsHeader.Parse(new ReadOnlySpan<byte>(ptr + 8, (int)headerLength), length - dataStart, path);
            return new SafetensorsFile(path, map, view, ptr, dataStart, tensors, metadata);
        }
        catch
        {
            if (acquired) view!.SafeMemoryMappedViewHandle.ReleasePointer();
            view?.Dispose();
            map.Dispose();
            throw;
        }
    }

    /// <summary>Whether the file holds a tensor named <paramref name="name"/>.</summary>
    public bool Contains(string name) => Tensors.ContainsKey(name);

    /// <summary>The tensor's header entry; KeyNotFoundException naming the file when there is no such tensor.</summary>
    public TensorInfo Info(string name) =>
        Tensors.TryGetValue(name, out var info) ? info : throw new KeyNotFoundException($"{Path}: no tensor named '{name}'");

    /// <summary>The tensor's raw bytes, straight from the map (valid while the file is open).</summary>
    public ReadOnlySpan<byte> GetBytes(string name)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var info = Info(name);
        if (info.Length > int.MaxValue) throw new NotSupportedException($"{Path}: tensor '{name}' has {info.Length} bytes, more than one span holds");
        return new ReadOnlySpan<byte>(_base + _dataStart + info.Offset, (int)info.Length);
    }

    /// <summary>F32, F16 or BF16 data as F32.</summary>
    public float[] ReadFloats(string name)
    {
        var info = Info(name);
        var bytes = GetBytes(name);
        var result = new float[info.ElementCount];
        switch (info.DType)
        {
            case "F32": MemoryMarshal.Cast<byte, float>(bytes).CopyTo(result); break;
            case "F16": HalfBits.F16ToFloat(MemoryMarshal.Cast<byte, ushort>(bytes), result); break;
            case "BF16": HalfBits.Bf16ToFloat(MemoryMarshal.Cast<byte, ushort>(bytes), result); break;
            default: throw new InvalidDataException($"{Path}: tensor '{name}' is {info.DType}, not a float type");
        }
        return result;
    }

    /// <summary>An I64 tensor as a new array; InvalidDataException for any other dtype.</summary>
    public long[] ReadInt64(string name)
    {
        var info = Info(name);
        if (info.DType != "I64") throw new InvalidDataException($"{Path}: tensor '{name}' is {info.DType}, not I64");
        return MemoryMarshal.Cast<byte, long>(GetBytes(name)).ToArray();
    }

    /// <summary>An I32 tensor as a new array; InvalidDataException for any other dtype.</summary>
    public int[] ReadInt32(string name)
    {
        var info = Info(name);
        if (info.DType != "I32") throw new InvalidDataException($"{Path}: tensor '{name}' is {info.DType}, not I32");
        return MemoryMarshal.Cast<byte, int>(GetBytes(name)).ToArray();
    }

    /// <summary>Unmaps the file; spans from <see cref="GetBytes"/> are invalid afterwards. Idempotent.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _view?.SafeMemoryMappedViewHandle.ReleasePointer();
        _view?.Dispose();
        _map?.Dispose();
    }
}
