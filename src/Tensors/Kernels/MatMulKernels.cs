namespace LoraEngine.Tensors.Kernels;

public sealed class MatMulOps
{
    readonly ComputeDevice _device;

    internal MatMulOps(ComputeDevice device)
    {
        _device = device;
    }

    public ComputeDevice Device => _device;
}
