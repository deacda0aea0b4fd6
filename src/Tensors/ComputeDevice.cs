using System.Linq.Expressions;
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
/// The one device seam: an ILGPU accelerator, its memory and its implementation of each op family. CUDA, OpenCL and
/// ILGPU's CPU accelerator share the ILGPU kernels; the CPU device made by <see cref="CreateCpu()"/> has its own host
/// implementation of every family instead (vectorised, both cores), chosen when the device is created, as ggml's CPU
/// backend fills its own table. <see cref="CreateCpuKernels"/> keeps the kernels on the CPU, for tests that compare them.
/// </summary>
public sealed class ComputeDevice : IDisposable
{
    /// <summary>Environment variable the tests (and tools) read to pick a device; default "cpu".</summary>
    public const string EnvironmentVariable = "LORAENGINE_DEVICE";

    readonly Context _context;
    readonly OpFamilies _ops;
    readonly Lock _familyLock = new();
    MatMulOps? _matMul;
    NormOps? _norm;
    ElementwiseOps? _elementwise;
    RopeOps? _rope;
    AttentionOps? _attention;
    SamplingOps? _sampling;
    LoraOps? _lora;
    SampleOps? _sample;
    bool _disposed;

    ComputeDevice(Context context, Accelerator accelerator, DeviceKind kind, OpFamilies ops, bool groupLanes = false)
    {
        _context = context;
        Accelerator = accelerator;
        Kind = kind;
        _ops = ops;
        UsesGroupLanes = groupLanes || kind == DeviceKind.OpenCl;
        // CUDA work goes to a stream of our own, never the NULL stream: a CUDA graph can only be captured from an
        // explicit stream, and every launch and copy must be on the one stream the graph is captured from.
        Stream = kind == DeviceKind.Cuda ? accelerator.CreateStream() : accelerator.DefaultStream;
    }

    internal Accelerator Accelerator { get; }

    /// <summary>The stream every kernel launch and copy of this device is queued on, in order.</summary>
    internal AcceleratorStream Stream { get; }

    /// <summary>The kind of accelerator.</summary>
    public DeviceKind Kind { get; }

    /// <summary>
    /// The CUDA functions (<c>CUfunction</c>) that read nothing an earlier kernel writes before their
    /// <c>griddepcontrol.wait</c> (<see cref="PtxKernels"/> adds them as it loads them): a graph's edges into them can be
    /// programmatic (<see cref="DeviceGraph"/>).
    /// </summary>
    internal System.Collections.Concurrent.ConcurrentDictionary<IntPtr, bool> ProgrammaticFunctions { get; } = new();

    /// <summary>The accelerator's name as ILGPU reports it (e.g. the GPU's model).</summary>
    public string Name => Accelerator.Name;

    /// <summary>Device memory in bytes (for the CPU accelerator: the host's physical memory).</summary>
    public long MemorySize => Kind == DeviceKind.Cpu ? GC.GetGCMemoryInfo().TotalAvailableMemoryBytes : Accelerator.MemorySize;

    /// <summary>
    /// Whether kernels draw their warps on the group (<see cref="GroupLanes"/>) instead of the hardware's: OpenCL, where
    /// ILGPU writes warp shuffles for Intel's devices only and sub-groups need not be 32 wide, and the CPU accelerator
    /// device that tests that path (<see cref="CreateCpuKernelsWithGroupLanes"/>).
    /// </summary>
    internal bool UsesGroupLanes { get; }

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

    /// <summary>
    /// Device <paramref name="index"/> of a kind, for the ranks of tensor parallelism (rank r takes device r):
    /// "cuda" and "opencl" the index-th device ILGPU lists, "cpu" a CPU device of its own (every CPU device shares the
    /// host's cores), "auto" the kind <see cref="Create(string)"/> would pick. Throws naming the kind when it has no
    /// device of that index.
    /// </summary>
    public static ComputeDevice Create(string device, int index)
    {
        ArgumentNullException.ThrowIfNull(device);
        if (index == 0) return Create(device);
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        string kind = ResolveKind(device);
        int count = CountOfKind(kind);
        if (index >= count) throw new ArgumentOutOfRangeException(nameof(index), index, $"device {index} of kind '{kind}' requested but {count} are available");
        return kind switch
        {
            "cpu" => CreateCpu(),
            "cuda" => CreateCuda(index)!,
            _ => CreateOpenCl(gpuOnly: device.Trim().ToLowerInvariant() == "auto", index)!,
        };
    }

    /// <summary>
    /// How many devices of the kind <paramref name="device"/> names (as <see cref="Create(string)"/> resolves "auto")
    /// this machine has; the CPU counts as one device per core, the most ranks that can each have a core of their own.
    /// </summary>
    public static int Count(string device)
    {
        ArgumentNullException.ThrowIfNull(device);
        return CountOfKind(ResolveKind(device));
    }

    /// <summary>"cpu", "cuda" or "opencl": what "auto" stands for on this machine, else the name itself (checked).</summary>
    public static string ResolveKind(string device)
    {
        ArgumentNullException.ThrowIfNull(device);
        string kind = device.Trim().ToLowerInvariant();
        return kind switch
        {
            "cpu" or "cuda" or "opencl" => kind,
            "auto" => CountCuda() > 0 ? "cuda" : CountOpenCl(gpuOnly: true) > 0 ? "opencl" : "cpu",
            _ => throw new ArgumentException($"unknown device '{device}' (expected auto, cuda, opencl or cpu)", nameof(device)),
        };
    }

    static int CountOfKind(string kind) => kind switch
    {
        "cpu" => Environment.ProcessorCount,
        "cuda" => CountCuda(),
        _ => CountOpenCl(gpuOnly: false),
    };

    static int CountCuda()
    {
        using var context = Context.Create(b => b.Cuda());
        return context.GetCudaDevices().Count;
    }

    static int CountOpenCl(bool gpuOnly)
    {
        try
        {
            using var context = Context.Create(b => b.OpenCL(d => (!gpuOnly || d.DeviceType == CLDeviceType.CL_DEVICE_TYPE_GPU) && d.Capabilities.GenericAddressSpace));
            return context.GetCLDevices().Count;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            return 0; // no OpenCL runtime installed
        }
    }

    /// <summary>The device named by <c>LORAENGINE_DEVICE</c> (default "cpu").</summary>
    public static ComputeDevice FromEnvironment()
    {
        string? name = Environment.GetEnvironmentVariable(EnvironmentVariable);
        return Create(string.IsNullOrWhiteSpace(name) ? "cpu" : name);
    }

    /// <summary>The CPU device: its own host implementation of every op family (TensorPrimitives, Vector512, both cores).</summary>
    public static ComputeDevice CreateCpu() => CreateCpu(OpFamilies.Host);

    /// <summary>
    /// ILGPU's CPU accelerator running the ILGPU kernels themselves (emulating 32-wide warps and groups of up to 1024
    /// threads like a GPU): the GPU code path on a machine without a GPU, for tests that check the kernels. Seconds per
    /// kernel at model sizes: serving uses <see cref="CreateCpu()"/>.
    /// </summary>
    public static ComputeDevice CreateCpuKernels() => CreateCpu(OpFamilies.Kernels);

    /// <summary>
    /// The kernels on ILGPU's CPU accelerator with their warps drawn on the group, as on OpenCL (<see cref="GroupLanes"/>):
    /// OpenCL's code path, tested where there is no OpenCL device.
    /// </summary>
    internal static ComputeDevice CreateCpuKernelsWithGroupLanes() => CreateCpu(OpFamilies.Kernels, groupLanes: true);

    static ComputeDevice CreateCpu(OpFamilies ops, bool groupLanes = false)
    {
        var context = Context.Create(b => b.CPU(CPUDeviceKind.Nvidia).EnableAlgorithms().Optimize(OptimizationLevel.O1));
        var accelerator = context.CreateCPUAccelerator(0, CPUAcceleratorMode.Parallel);
        return new ComputeDevice(context, accelerator, DeviceKind.Cpu, ops, groupLanes);
    }

    static ComputeDevice? CreateCuda(int index = 0)
    {
        var context = Context.Create(b => b.Cuda().EnableAlgorithms().Optimize(OptimizationLevel.O2));
        var devices = context.GetCudaDevices();
        if (devices.Count <= index)
        {
            context.Dispose();
            return null;
        }
        return new ComputeDevice(context, devices[index].CreateAccelerator(context), DeviceKind.Cuda, OpFamilies.Kernels);
    }

    /// <param name="gpuOnly">true for "auto" (an OpenCL CPU device is no faster than the CPU device); an explicit "opencl" takes any type</param>
    /// <param name="index">which of the matching devices, in ILGPU's order</param>
    static ComputeDevice? CreateOpenCl(bool gpuOnly, int index = 0)
    {
        Context? context = null;
        try
        {
            PoclSettings.PreferContinuationBasedWorkGroups();
            context = Context.Create(b => b.OpenCL(d => (!gpuOnly || d.DeviceType == CLDeviceType.CL_DEVICE_TYPE_GPU) && d.Capabilities.GenericAddressSpace)
                .EnableAlgorithms().Optimize(OptimizationLevel.O2));
            var devices = context.GetCLDevices();
            if (devices.Count <= index)
            {
                context.Dispose();
                return null;
            }
            return new ComputeDevice(context, devices[index].CreateAccelerator(context), DeviceKind.OpenCl, OpFamilies.Kernels);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // No OpenCL runtime installed (missing libOpenCL) is the common case: not an error for "auto".
            context?.Dispose();
            return null;
        }
    }

    /// <summary>
    /// Sets a view to zero on <see cref="Stream"/>. OpenCL takes a kernel: ILGPU 1.5.3's OpenCL memset scales a view's
    /// byte offset by the element size again, so any view not at the start of its buffer fails (pocl: "offset(128) &gt;
    /// buffer->size(48)").
    /// </summary>
    internal void Zero<T>(ArrayView<T> view) where T : unmanaged
    {
        if (Kind != DeviceKind.OpenCl)
        {
            view.MemSetToZero(Stream);
            return;
        }
        // Loaded on first use; two threads racing here load it twice, harmlessly.
        ref Delegate? zero = ref typeof(T) == typeof(float) ? ref _zeroF32 : ref typeof(T) == typeof(int) ? ref _zeroI32 : ref _zero16;
        zero ??= Serialized(Accelerator.LoadAutoGroupedKernel<Index1D, ArrayView<T>>(ZeroKernel));
        ((Action<AcceleratorStream, Index1D, ArrayView<T>>)zero)(Stream, (int)view.Length, view);
    }

    Delegate? _zeroF32, _zeroI32, _zero16; // OpenCL's zeroing kernels for the element types tensors have (F32, I32, 16-bit)

    static void ZeroKernel<T>(Index1D i, ArrayView<T> view) where T : unmanaged => view[i] = default;

    /// <summary>
    /// The kernel launcher as this device runs it: on OpenCL under the device's launch lock, since ILGPU sets a kernel's
    /// arguments on the shared OpenCL kernel object and then enqueues it, so two threads launching the same kernel could
    /// run it with each other's arguments (seen: the Lora and Models tests, which share a device across test threads,
    /// failed now and then on pocl); elsewhere the launcher itself (CUDA passes the arguments with the launch).
    /// </summary>
    internal TLauncher Serialized<TLauncher>(TLauncher launcher) where TLauncher : Delegate =>
        Kind == DeviceKind.OpenCl ? UnderLock(launcher, _launchLock) : launcher;

    readonly object _launchLock = new();

    /// <summary>A delegate of the same type that calls <paramref name="launcher"/> holding <paramref name="gate"/>.</summary>
    internal static TLauncher UnderLock<TLauncher>(TLauncher launcher, object gate) where TLauncher : Delegate
    {
        var parameters = typeof(TLauncher).GetMethod("Invoke")!.GetParameters().Select(p => Expression.Parameter(p.ParameterType, p.Name)).ToArray();
        var lockObject = Expression.Constant(gate);
        var body = Expression.Block(
            Expression.Call(typeof(Monitor).GetMethod(nameof(Monitor.Enter), [typeof(object)])!, lockObject),
            Expression.TryFinally(
                Expression.Invoke(Expression.Constant(launcher), parameters),
                Expression.Call(typeof(Monitor).GetMethod(nameof(Monitor.Exit), [typeof(object)])!, lockObject)));
        return Expression.Lambda<TLauncher>(body, parameters).Compile();
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

    // Each family is made on first use (loading a family's kernels compiles them), then read without a lock.
    /// <summary>Linear layers y = x·Wᵀ (GEMV and GEMM), made on first use.</summary>
    public MatMulOps MatMul => _matMul ?? Make(ref _matMul, _ops.MatMul);
    /// <summary>RMSNorm (and the fused residual add + RMSNorm), made on first use.</summary>
    public NormOps Norm => _norm ?? Make(ref _norm, _ops.Norm);
    /// <summary>Residual add, SwiGLU and the embedding gather, made on first use.</summary>
    public ElementwiseOps Elementwise => _elementwise ?? Make(ref _elementwise, _ops.Elementwise);
    /// <summary>Rotary position embedding, made on first use.</summary>
    public RopeOps Rope => _rope ?? Make(ref _rope, _ops.Rope);
    /// <summary>KV-cache writes and paged attention, made on first use.</summary>
    public AttentionOps Attention => _attention ?? Make(ref _attention, _ops.Attention);
    /// <summary>Row-wise softmax, log-softmax, argmax and top-k over logits, made on first use.</summary>
    public SamplingOps Sampling => _sampling ?? Make(ref _sampling, _ops.Sampling);
    /// <summary>Batched LoRA shrink and expand (each token its own adapter slot), made on first use.</summary>
    public LoraOps Lora => _lora ?? Make(ref _lora, _ops.Lora);
    /// <summary>Sampling of logits rows into tokens and logprobs (temperature, filters, penalties, Philox draws), made on first use.</summary>
    public SampleOps Sample => _sample ?? Make(ref _sample, _ops.Sample);

    T Make<T>(ref T? family, Func<ComputeDevice, T> create) where T : class
    {
        lock (_familyLock)
        {
            if (family == null) Volatile.Write(ref family, create(this));
            return family;
        }
    }

    /// <summary>
    /// A device's implementation of each op family (ggml's backend table): the ILGPU kernels, or the CPU's host code.
    /// The host families derive from the kernel ones and override every launch they implement, so an op without a
    /// host version still runs, as its kernel on the CPU accelerator.
    /// </summary>
    sealed record OpFamilies(
        Func<ComputeDevice, MatMulOps> MatMul,
        Func<ComputeDevice, NormOps> Norm,
        Func<ComputeDevice, ElementwiseOps> Elementwise,
        Func<ComputeDevice, RopeOps> Rope,
        Func<ComputeDevice, AttentionOps> Attention,
        Func<ComputeDevice, SamplingOps> Sampling,
        Func<ComputeDevice, SampleOps> Sample,
        Func<ComputeDevice, LoraOps> Lora)
    {
        public static readonly OpFamilies Kernels = new(
            d => new MatMulOps(d), d => new NormOps(d), d => new ElementwiseOps(d), d => new RopeOps(d),
            d => new AttentionOps(d), d => new SamplingOps(d), d => new SampleOps(d), d => new LoraOps(d));

        public static readonly OpFamilies Host = new(
            d => new HostMatMul(d), d => new HostNorm(d), d => new HostElementwise(d), d => new HostRope(d),
            d => new HostAttention(d), d => new HostSampling(d), d => new HostSampleOps(d), d => new HostLora(d));
    }

    /// <summary>"{Kind}: {Name}", as logs and memory plans name the device (the CPU accelerator running the kernels says so).</summary>
    public override string ToString() => Kind == DeviceKind.Cpu && _ops == OpFamilies.Kernels ? $"{Kind}: {Name} (ILGPU kernels)" : $"{Kind}: {Name}";

    /// <summary>
    /// Frees the op families' own device memory (the attention and tensor-core workspaces), then the device's stream,
    /// accelerator and context; tensors of the device must be disposed first. Idempotent.
    /// </summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _attention?.Dispose();
        _matMul?.TensorCores?.Dispose();
        if (Stream != Accelerator.DefaultStream) Stream.Dispose();
        Accelerator.Dispose();
        _context.Dispose();
    }
}
