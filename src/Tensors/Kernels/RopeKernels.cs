namespace LoraEngine.Tensors.Kernels;

public sealed class RopeOps
{
    readonly ComputeDevice _device;

    internal RopeOps(ComputeDevice device)
    {
        _device = device;
    }

    public ComputeDevice Device => _device;
}
