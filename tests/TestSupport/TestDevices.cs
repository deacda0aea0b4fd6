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
}
