namespace LoraEngine.Tensors.Kernels;

public sealed class AttentionOps
{
    readonly ComputeDevice _device;

    internal AttentionOps(ComputeDevice device)
    {
        _device = device;
    }

    public ComputeDevice Device => _device;
}
