using LoraEngine.Tensors.Kernels;
using LoraEngine.TestSupport;
using Xunit;

namespace LoraEngine.Tensors.Tests;

/// <summary>Devices by index, one per tensor-parallel rank: the CPU counts one per core, and an index past the count is refused naming both.</summary>
public class ComputeDeviceTests
{
    [Fact]
    public void Cpu_devices_by_index_are_devices_of_their_own_up_to_one_per_core()
    {
        Assert.Equal(Environment.ProcessorCount, ComputeDevice.Count("cpu"));
        Assert.Equal("cpu", ComputeDevice.ResolveKind(" CPU "));
        using var first = ComputeDevice.Create("cpu", 0);
        using var second = ComputeDevice.Create("cpu", Environment.ProcessorCount - 1);
        Assert.NotSame(first, second);
        Assert.True(second.IsCpu);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => ComputeDevice.Create("cpu", Environment.ProcessorCount));
        Assert.Contains($"device {Environment.ProcessorCount} of kind 'cpu' requested but {Environment.ProcessorCount} are available", e.Message);
        Assert.Throws<ArgumentException>(() => ComputeDevice.Count("tpu"));
    }

    /// <summary>The memory plan counts what the families allocated: the CPU device's own ops allocate no workspace, the kernels' attention its split workspace.</summary>
    [Fact]
    public void Op_families_report_the_workspace_they_allocated()
    {
        Assert.Equal(0, TestDevices.CpuFast.Attention.AllocatedWorkspaceBytes);
        Assert.Equal(0, TestDevices.CpuFast.MatMul.AllocatedWorkspaceBytes);
        Assert.Equal(4L * AttentionOps.DefaultWorkspaceFloats, TestDevices.Cpu.Attention.AllocatedWorkspaceBytes);
        Assert.Equal(0, TestDevices.Cpu.MatMul.AllocatedWorkspaceBytes); // tensor cores are CUDA's
    }

    /// <summary>OpenCL's launchers run under the device's lock (ILGPU sets arguments on a shared kernel object): the wrapper passes every argument, holds the lock for the call and releases it when the launch throws.</summary>
    [Fact]
    public void A_launcher_under_lock_passes_its_arguments_and_holds_the_lock_only_while_it_runs()
    {
        var gate = new object();
        var seen = new List<(int, string, bool)>();
        var locked = ComputeDevice.UnderLock<Action<int, string>>((n, s) =>
        {
            seen.Add((n, s, Monitor.IsEntered(gate)));
            if (n < 0) throw new InvalidOperationException("launch failed");
        }, gate);
        locked(3, "x");
        Assert.Equal([(3, "x", true)], seen);
        Assert.False(Monitor.IsEntered(gate));
        Assert.Throws<InvalidOperationException>(() => locked(-1, "y"));
        Assert.False(Monitor.IsEntered(gate));
        Assert.Equal((-1, "y", true), seen[1]);

        Action<int> plain = _ => { };
        Assert.Same(plain, TestDevices.Cpu.Serialized(plain)); // CUDA and the CPU pass arguments with each launch
    }
}
