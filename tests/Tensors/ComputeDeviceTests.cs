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
}
