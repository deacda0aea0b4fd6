namespace LoraEngine.Tensors.Kernels;

public sealed class LoraOps
{
    readonly ComputeDevice _device;

    internal LoraOps(ComputeDevice device)
    {
        _device = device;
    }

    public ComputeDevice Device => _device;
}
