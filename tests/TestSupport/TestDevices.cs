using LoraEngine.Tensors;

namespace LoraEngine.TestSupport;

/// <summary>
/// The devices tests run on: <see cref="Configured"/> is the one named by LORAENGINE_DEVICE (default cpu),
/// <see cref="Cpu"/> is always ILGPU's CPU accelerator. Both are created once per test process.
/// Tests that check kernels turn host fast paths off through <see cref="Kernels"/>.
/// </summary>
public static class TestDevices
{
    static readonly Lazy<ComputeDevice> s_configured = new(ComputeDevice.FromEnvironment);
    static readonly Lazy<ComputeDevice> s_cpuKernels = new(() => { var d = ComputeDevice.CreateCpu(); d.UseHostFastPaths = false; return d; });
    static readonly Lazy<ComputeDevice> s_cpuFast = new(ComputeDevice.CreateCpu);

    /// <summary>The device under test, kernels only (host fast paths off).</summary>
    public static ComputeDevice Configured
    {
        get
        {
            var d = s_configured.Value;
            d.UseHostFastPaths = false;
            return d;
        }
    }

    /// <summary>ILGPU's CPU accelerator running the kernels themselves.</summary>
    public static ComputeDevice Cpu => s_cpuKernels.Value;

    /// <summary>The CPU device with its vectorised host paths on (what the engine uses on a CPU).</summary>
    public static ComputeDevice CpuFast => s_cpuFast.Value;

    /// <summary>The devices every kernel property runs on: the configured one and the CPU fast paths.</summary>
    public static IEnumerable<ComputeDevice> All => [Configured, CpuFast];

    public static bool ConfiguredIsGpu => Configured.Kind != DeviceKind.Cpu;

    /// <summary>
    /// Devices for whole-model tests: the CPU device's fast paths, plus the configured device when it is a GPU.
    /// (ILGPU's CPU accelerator emulates warps with OS threads — seconds per kernel at model sizes — so on a CPU
    /// the kernels themselves are covered by the per-kernel properties on small shapes.)
    /// </summary>
    public static IEnumerable<ComputeDevice> ForModels => ConfiguredIsGpu ? [CpuFast, Configured] : [CpuFast];

    /// <summary>The device a single whole-model test runs on: the configured GPU, else the CPU fast paths.</summary>
    public static ComputeDevice ForModel => ConfiguredIsGpu ? Configured : CpuFast;
}
