using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Runtime;
using LoraEngine.Tensors.Kernels;

namespace LoraEngine.Tensors;

/// <summary>
/// A dense, row-major tensor in device memory: a typed ILGPU buffer (float for F32, ushort bits for F16/BF16,
/// int for I32), a shape and a dtype. Nothing else: no strides, no autograd, no lazy graph.
/// A tensor made by <see cref="Slice"/> or <see cref="Reshape"/> is a view that shares (and does not own) memory.
/// </summary>
public sealed class DeviceTensor : IDisposable
{
    readonly MemoryBuffer _buffer;
    readonly long _offset;
    readonly bool _ownsBuffer;
    readonly int[] _shape;
    bool _disposed;

    DeviceTensor(ComputeDevice device, MemoryBuffer buffer, long offset, DType dtype, int[] shape, bool ownsBuffer)
    {
        Device = device;
        _buffer = buffer;
        _offset = offset;
        DType = dtype;
        _shape = shape;
        _ownsBuffer = ownsBuffer;
        Length = ElementCount(shape);
    }

    /// <summary>The device whose memory holds the tensor.</summary>
    public ComputeDevice Device { get; }

    /// <summary>The element type.</summary>
    public DType DType { get; }

    /// <summary>Dimensions, outermost first (row-major).</summary>
    public ReadOnlySpan<int> Shape => _shape;

    /// <summary>Number of dimensions.</summary>
    public int Rank => _shape.Length;

    /// <summary>Number of elements.</summary>
    public long Length { get; }

    /// <summary>Bytes of the elements: <see cref="Length"/> × the dtype's size.</summary>
    public long SizeInBytes => Length * DType.Size();

    /// <summary>Size of dimension <paramref name="dim"/>; negative counts from the end.</summary>
    public int Dim(int dim) => _shape[dim < 0 ? _shape.Length + dim : dim];

    /// <summary>The shape as messages write it: "[2, 3]".</summary>
    public string ShapeString => "[" + string.Join(", ", _shape) + "]";

    internal static DeviceTensor Allocate(ComputeDevice device, DType dtype, int[] shape)
    {
        ArgumentNullException.ThrowIfNull(shape);
        long n = ElementCount(shape);
        MemoryBuffer buffer = dtype switch
        {
            DType.F32 => device.Accelerator.Allocate1D<float>(Math.Max(n, 1)),
            DType.F16 or DType.BF16 => device.Accelerator.Allocate1D<ushort>(Math.Max(n, 1)),
            DType.I32 => device.Accelerator.Allocate1D<int>(Math.Max(n, 1)),
            _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "unknown dtype"),
        };
        if (device.IsCpu) HostMemory.AdviseHugePages(buffer);
        return new DeviceTensor(device, buffer, 0, dtype, (int[])shape.Clone(), ownsBuffer: true);
    }

    static long ElementCount(int[] shape)
    {
        long n = 1;
        foreach (int d in shape)
        {
            if (d < 0) throw new ArgumentException($"negative dimension in shape [{string.Join(", ", shape)}]", nameof(shape));
            n *= d;
        }
        return n;
    }

    /// <summary>A view of rows [start, start+count) along the first dimension.</summary>
    public DeviceTensor Slice(int start, int count)
    {
        if (Rank == 0) throw new InvalidOperationException("cannot slice a scalar tensor");
        if (start < 0 || count < 0 || start + count > _shape[0])
            throw new ArgumentOutOfRangeException(nameof(start), $"rows [{start}, {start + count}) outside {ShapeString}");
        long rowSize = _shape[0] == 0 ? 0 : Length / _shape[0];
        var shape = (int[])_shape.Clone();
        shape[0] = count;
        return new DeviceTensor(Device, _buffer, _offset + start * rowSize, DType, shape, ownsBuffer: false);
    }

    /// <summary>A view with another shape of the same element count.</summary>
    public DeviceTensor Reshape(params int[] shape)
    {
        if (ElementCount(shape) != Length)
            throw new ArgumentException($"cannot reshape {ShapeString} to [{string.Join(", ", shape)}]", nameof(shape));
        return new DeviceTensor(Device, _buffer, _offset, DType, (int[])shape.Clone(), ownsBuffer: false);
    }

    /// <summary>Offset of the first element within the underlying buffer, in elements (for alignment checks).</summary>
    internal long ElementOffset => _offset;

    /// <summary>Whether this tensor and <paramref name="other"/> share at least one element of memory (views of one buffer).</summary>
    internal bool Overlaps(DeviceTensor other) =>
        ReferenceEquals(_buffer, other._buffer) && Length > 0 && other.Length > 0
        && _offset < other._offset + other.Length && other._offset < _offset + Length;

    internal ArrayView<T> View<T>() where T : unmanaged
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var typed = (MemoryBuffer1D<T, Stride1D.Dense>)_buffer;
        return typed.View.SubView(_offset, Length);
    }

    /// <summary>F32 view; throws unless DType is F32.</summary>
    internal ArrayView<float> F32 => DType == DType.F32 ? View<float>() : throw WrongType(DType.F32);

    /// <summary>Raw 16-bit view; throws unless DType is F16 or BF16.</summary>
    internal ArrayView<ushort> U16 => DType.Is16Bit() ? View<ushort>() : throw WrongType(DType.BF16);

    /// <summary>I32 view; throws unless DType is I32.</summary>
    internal ArrayView<int> I32 => DType == DType.I32 ? View<int>() : throw WrongType(DType.I32);

    InvalidOperationException WrongType(DType wanted) => new($"tensor is {DType}, not {wanted}");

    /// <summary>
    /// Host memory of this tensor on the CPU accelerator (for vectorised host paths). Valid until the tensor is disposed.
    /// </summary>
    internal unsafe Span<T> HostSpan<T>() where T : unmanaged
    {
        if (!Device.IsCpu) throw new InvalidOperationException("host spans exist only on the CPU device");
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (sizeof(T) != DType.Size()) throw new InvalidOperationException($"element size of {typeof(T).Name} does not match {DType}");
        Device.Synchronize(); // a kernel still running on the stream may be writing this memory
        return new Span<T>((T*)_buffer.NativePtr + _offset, checked((int)Length));
    }

    /// <summary>Copies host data into this tensor (elements as stored: ushort bits for F16/BF16).</summary>
    public void CopyFrom<T>(ReadOnlySpan<T> data) where T : unmanaged
    {
        CheckElementType<T>(nameof(data));
        if (data.Length != Length)
            throw new ArgumentException($"{data.Length} elements given for a tensor of shape {ShapeString} ({Length} elements)", nameof(data));
        if (Length == 0) return;
        View<T>().CopyFromCPU(Device.Stream, data);
    }

    /// <summary>Copies the tensor to host memory (synchronises the device).</summary>
    public void CopyTo<T>(Span<T> destination) where T : unmanaged
    {
        CheckElementType<T>(nameof(destination));
        if (destination.Length < Length)
            throw new ArgumentException($"destination holds {destination.Length} elements, tensor {ShapeString} has {Length}", nameof(destination));
        if (Length == 0) return;
        View<T>().CopyToCPU(Device.Stream, destination[..(int)Length]);
        Device.Stream.Synchronize();
    }

    /// <summary>Copies the tensor to a new host array.</summary>
    public T[] ToArray<T>() where T : unmanaged
    {
        var result = new T[Length];
        CopyTo<T>(result);
        return result;
    }

    /// <summary>Returns the values as F32 whatever the float dtype.</summary>
    public float[] ToFloatArray()
    {
        if (DType == DType.F32) return ToArray<float>();
        if (!DType.Is16Bit()) throw new InvalidOperationException($"tensor is {DType}, not a float type");
        var result = new float[Length];
        HalfBits.ToFloat(DType, ToArray<ushort>(), result);
        return result;
    }

    /// <summary>Sets every element to zero.</summary>
    public void Clear()
    {
        if (Length == 0) return;
        switch (DType)
        {
            case DType.F32: Device.Zero(View<float>()); break;
            case DType.I32: Device.Zero(View<int>()); break;
            default: Device.Zero(View<ushort>()); break;
        }
    }

    /// <summary>Copies all elements of <paramref name="source"/> (same dtype and length) into this tensor on the device.</summary>
    public void CopyFrom(DeviceTensor source)
    {
        ArgumentNullException.ThrowIfNull(source);
        if (source.DType != DType) throw new ArgumentException($"source is {source.DType}, destination {DType}", nameof(source));
        if (source.Length != Length) throw new ArgumentException($"source {source.ShapeString} and destination {ShapeString} differ in size", nameof(source));
        if (Length == 0) return;
        var stream = Device.Stream;
        switch (DType)
        {
            case DType.F32: source.View<float>().CopyTo(stream, View<float>()); break;
            case DType.I32: source.View<int>().CopyTo(stream, View<int>()); break;
            default: source.View<ushort>().CopyTo(stream, View<ushort>()); break;
        }
    }

    void CheckElementType<T>(string paramName) where T : unmanaged
    {
        bool ok = DType switch
        {
            DType.F32 => typeof(T) == typeof(float),
            DType.I32 => typeof(T) == typeof(int),
            _ => typeof(T) == typeof(ushort),
        };
        if (!ok) throw new ArgumentException($"a {DType} tensor holds {(DType.Is16Bit() ? "ushort" : DType == DType.F32 ? "float" : "int")} elements, not {typeof(T).Name}", paramName);
    }

    /// <summary>"F32[2, 3]".</summary>
    public override string ToString() => $"{DType}{ShapeString}";

    /// <summary>Frees the device memory when this tensor owns it; a view frees nothing (its owner must outlive it). Idempotent.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        if (_ownsBuffer) _buffer.Dispose();
    }
}
