namespace LoraEngine.Tensors.Kernels;

public sealed class SamplingOps
{
    readonly ComputeDevice _device;

    internal SamplingOps(ComputeDevice device)
    {
        _device = device;
    }

    public ComputeDevice Device => _device;
}
