using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;
using ILGPU.Runtime.OpenCL;
using LoraEngine.Tensors.Kernels;

namespace LoraEngine.Tensors;

/// <summary>The kind of accelerator a <see cref="ComputeDevice"/> runs on.</summary>
public enum DeviceKind
{
    /// <summary>The CPU, through ILGPU's CPU accelerator.</summary>
    Cpu,
    /// <summary>An NVIDIA GPU through CUDA.</summary>
    Cuda,
    /// <summary>An OpenCL device (with generic address space support).</summary>
    OpenCl,
}

/// <summary>
/// The one device seam: an ILGPU accelerator, its memory and the kernel families loaded on it.
/// CUDA, OpenCL and ILGPU's CPU accelerator share every kernel; the CPU device may also take
/// vectorised host paths for the heavy ops (<see cref="UseHostFastPaths"/>).
/// </summary>
public sealed class ComputeDevice : IDisposable
{
    /// <summary>Environment variable the tests (and tools) read to pick a device; default "cpu".</summary>
    public const string EnvironmentVariable = "LORAENGINE_DEVICE";

    readonly Context _context;
    readonly Dictionary<Type, object> _families = new();
    bool _disposed;

    ComputeDevice(Context context, Accelerator accelerator, DeviceKind kind)
    {
        _context = context;
        Accelerator = accelerator;
        Kind = kind;
        // CUDA work goes to a stream of our own, never the NULL stream: a CUDA graph can only be captured from an
        // explicit stream, and every launch and copy must be on the one stream the graph is captured from.
        Stream = kind == DeviceKind.Cuda ? accelerator.CreateStream() : accelerator.DefaultStream;
    }

    internal Accelerator Accelerator { get; }

    /// <summary>The stream every kernel launch and copy of this device is queued on, in order.</summary>
    internal AcceleratorStream Stream { get; }

    /// <summary>The kind of accelerator.</summary>
    public DeviceKind Kind { get; }

    /// <summary>The accelerator's name as ILGPU reports it (e.g. the GPU's model).</summary>
    public string Name => Accelerator.Name;

    /// <summary>Device memory in bytes (for the CPU accelerator: the host's physical memory).</summary>
    public long MemorySize => Kind == DeviceKind.Cpu ? GC.GetGCMemoryInfo().TotalAvailableMemoryBytes : Accelerator.MemorySize;

    /// <summary>
    /// On the CPU device, ops with a vectorised host implementation use it instead of the ILGPU kernel
    /// (same results within the op's tolerance). Tests turn this off to exercise the kernels themselves.
    /// </summary>
    public bool UseHostFastPaths { get; set; }

    /// <summary>Whether this is the CPU device.</summary>
    public bool IsCpu => Kind == DeviceKind.Cpu;

    /// <summary>Creates a device: "cuda", "opencl", "cpu" or "auto" (CUDA, else an OpenCL GPU, else the CPU).</summary>
    public static ComputeDevice Create(string device = "auto")
    {
        ArgumentNullException.ThrowIfNull(device);
        string kind = device.Trim().ToLowerInvariant();
        return kind switch
        {
            "cpu" => CreateCpu(),
            "cuda" => CreateCuda() ?? throw new InvalidOperationException("device 'cuda' requested but no CUDA device was found"),
            "opencl" => CreateOpenCl(gpuOnly: false) ?? throw new InvalidOperationException("device 'opencl' requested but no OpenCL device with generic address space support was found"),
            "auto" => CreateCuda() ?? CreateOpenCl(gpuOnly: true) ?? CreateCpu(),
            _ => throw new ArgumentException($"unknown device '{device}' (expected auto, cuda, opencl or cpu)", nameof(device)),
        };
    }

    /// <summary>The device named by <c>LORAENGINE_DEVICE</c> (default "cpu").</summary>
    public static ComputeDevice FromEnvironment()
    {
        string? name = Environment.GetEnvironmentVariable(EnvironmentVariable);
        return Create(string.IsNullOrWhiteSpace(name) ? "cpu" : name);
    }

    /// <summary>ILGPU's CPU accelerator, emulating 32-wide warps and groups of up to 1024 threads like a GPU.</summary>
    public static ComputeDevice CreateCpu()
    {
        var context = Context.Create(b => b.CPU(CPUDeviceKind.Nvidia).EnableAlgorithms().Optimize(OptimizationLevel.O1));
        var accelerator = context.CreateCPUAccelerator(0, CPUAcceleratorMode.Parallel);
        return new ComputeDevice(context, accelerator, DeviceKind.Cpu) { UseHostFastPaths = true };
    }

    static ComputeDevice? CreateCuda()
    {
        var context = Context.Create(b => b.Cuda().EnableAlgorithms().Optimize(OptimizationLevel.O2));
        var devices = context.GetCudaDevices();
        if (devices.Count == 0)
        {
            context.Dispose();
            return null;
        }
        return new ComputeDevice(context, devices[0].CreateAccelerator(context), DeviceKind.Cuda);
    }

    /// <param name="gpuOnly">true for "auto" (an OpenCL CPU device is no faster than the CPU device); an explicit "opencl" takes any type</param>
    static ComputeDevice? CreateOpenCl(bool gpuOnly)
    {
        Context? context = null;
        try
        {
            context = Context.Create(b => b.OpenCL(d => (!gpuOnly || d.DeviceType == CLDeviceType.CL_DEVICE_TYPE_GPU) && d.Capabilities.GenericAddressSpace)
                .EnableAlgorithms().Optimize(OptimizationLevel.O2));
            var devices = context.GetCLDevices();
            if (devices.Count == 0)
            {
                context.Dispose();
                return null;
            }
            return new ComputeDevice(context, devices[0].CreateAccelerator(context), DeviceKind.OpenCl);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // No OpenCL runtime installed (missing libOpenCL) is the common case: not an error for "auto".
            context?.Dispose();
            return null;
        }
    }

    /// <summary>Allocates an uninitialised tensor.</summary>
    public DeviceTensor Allocate(DType dtype, params int[] shape) => DeviceTensor.Allocate(this, dtype, shape);

    /// <summary>Allocates a tensor filled with zeros.</summary>
    public DeviceTensor Zeros(DType dtype, params int[] shape)
    {
        var t = DeviceTensor.Allocate(this, dtype, shape);
        t.Clear();
        return t;
    }

    /// <summary>Uploads F32 data.</summary>
    public DeviceTensor Upload(ReadOnlySpan<float> data, params int[] shape) => Upload(data, DType.F32, shape);

    /// <summary>Uploads I32 data.</summary>
    public DeviceTensor Upload(ReadOnlySpan<int> data, params int[] shape) => Upload(data, DType.I32, shape);

    /// <summary>Uploads raw elements of <paramref name="dtype"/> (ushort bits for F16/BF16).</summary>
    public DeviceTensor Upload<T>(ReadOnlySpan<T> data, DType dtype, params int[] shape) where T : unmanaged
    {
        var t = DeviceTensor.Allocate(this, dtype, shape);
        try
        {
            t.CopyFrom(data);
        }
        catch
        {
            t.Dispose();
            throw;
        }
        return t;
    }

    /// <summary>Waits for every launched kernel and copy to finish.</summary>
    public void Synchronize() => Stream.Synchronize();

    /// <summary>The kernel family of type <typeparamref name="T"/>, loaded once per device on first use.</summary>
    internal T Kernels<T>(Func<ComputeDevice, T> create) where T : class
    {
        lock (_families)
        {
            if (!_families.TryGetValue(typeof(T), out var family))
                _families[typeof(T)] = family = create(this);
            return (T)family;
        }
    }

    /// <summary>Linear layers y = x·Wᵀ (GEMV and GEMM), loaded on first use.</summary>
    public MatMulOps MatMul => Kernels(d => new MatMulOps(d));
    /// <summary>RMSNorm (and the fused residual add + RMSNorm), loaded on first use.</summary>
    public NormOps Norm => Kernels(d => new NormOps(d));
    /// <summary>Residual add, SwiGLU and the embedding gather, loaded on first use.</summary>
    public ElementwiseOps Elementwise => Kernels(d => new ElementwiseOps(d));
    /// <summary>Rotary position embedding, loaded on first use.</summary>
    public RopeOps Rope => Kernels(d => new RopeOps(d));
    /// <summary>KV-cache writes and paged attention, loaded on first use.</summary>
    public AttentionOps Attention => Kernels(d => new AttentionOps(d));
    /// <summary>Row-wise softmax, log-softmax, argmax and top-k over logits, loaded on first use.</summary>
    public SamplingOps Sampling => Kernels(d => new SamplingOps(d));
    /// <summary>Sampling of logits rows into tokens and logprobs (temperature, filters, penalties, Philox draws), loaded on first use.</summary>
    public SampleOps Sample => Kernels(d => new SampleOps(d));
    /// <summary>Batched LoRA shrink and expand (each token its own adapter slot), loaded on first use.</summary>
    public LoraOps Lora => Kernels(d => new LoraOps(d));

    /// <summary>"{Kind}: {Name}", as logs and memory plans name the device.</summary>
    public override string ToString() => $"{Kind}: {Name}";

    /// <summary>Frees the device's stream, accelerator and context; tensors of the device must be disposed first. Idempotent.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        if (Stream != Accelerator.DefaultStream) Stream.Dispose();
        Accelerator.Dispose();
        _context.Dispose();
    }
}
