using LoraEngine.Tensors;

namespace LoraEngine.TestSupport;

/// <summary>
/// The devices tests run on, each created once per test process: <see cref="Configured"/> is the one named by
/// LORAENGINE_DEVICE (default cpu) running its ILGPU kernels, <see cref="Cpu"/> is always ILGPU's CPU accelerator
/// running the kernels, and <see cref="CpuFast"/> is the CPU device with its own host implementation.
/// </summary>
public static class TestDevices
{
    static readonly Lazy<ComputeDevice> s_cpuKernels = new(ComputeDevice.CreateCpuKernels);
    static readonly Lazy<ComputeDevice> s_cpuFast = new(ComputeDevice.CreateCpu);
    static readonly Lazy<ComputeDevice> s_configured = new(() =>
    {
        var d = ComputeDevice.FromEnvironment();
        if (d.Kind != DeviceKind.Cpu) return d;
        d.Dispose(); // on a CPU the kernels under test are the CPU accelerator's
        return s_cpuKernels.Value;
    });

    /// <summary>The device under test, running the ILGPU kernels (on a CPU: <see cref="Cpu"/>).</summary>
    public static ComputeDevice Configured => s_configured.Value;

    /// <summary>ILGPU's CPU accelerator running the kernels themselves.</summary>
    public static ComputeDevice Cpu => s_cpuKernels.Value;

    /// <summary>The CPU device with its own host implementation of every op family (what the engine uses on a CPU).</summary>
    public static ComputeDevice CpuFast => s_cpuFast.Value;

    /// <summary>The devices every kernel property runs on: the configured one and the CPU device's host implementation.</summary>
    public static IEnumerable<ComputeDevice> All => [Configured, CpuFast];

    public static bool ConfiguredIsGpu => Configured.Kind != DeviceKind.Cpu;

    /// <summary>
    /// Devices for whole-model tests: the CPU device, plus the configured device when it is a GPU.
    /// (ILGPU's CPU accelerator emulates warps with OS threads — seconds per kernel at model sizes — so on a CPU
    /// the kernels themselves are covered by the per-kernel properties on small shapes.)
    /// </summary>
    public static IEnumerable<ComputeDevice> ForModels => ConfiguredIsGpu ? [CpuFast, Configured] : [CpuFast];

    /// <summary>The device a single whole-model test runs on: the configured GPU, else the CPU device.</summary>
    public static ComputeDevice ForModel => ConfiguredIsGpu ? Configured : CpuFast;
}
