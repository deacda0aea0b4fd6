using LoraEngine.Tensors;

namespace LoraEngine.Models.Llama;

/// <summary>
/// A projection y = W·x as the model sees it. The model knows no adapters: the LoRA layer wraps an ILinear and
/// reads its per-step metadata from <see cref="StepBatch.LinearContext"/>.
/// </summary>
public interface ILinear
{
    int InFeatures { get; }

    int OutFeatures { get; }

    /// <param name="y">[tokens, OutFeatures] F32</param>
    /// <param name="x">[tokens, InFeatures] F32</param>
    /// <param name="batch">the step's metadata, passed through untouched</param>
    void Forward(DeviceTensor y, DeviceTensor x, StepBatch batch);
}

/// <summary>A plain linear layer over a weight stored [out, in] as in safetensors, in its stored dtype.</summary>
public sealed class DenseLinear(DeviceTensor weight) : ILinear, IDisposable
{
    /// <summary>[out, in] F32, F16 or BF16.</summary>
    public DeviceTensor Weight { get; } = weight;

    public int InFeatures => Weight.Dim(1);

    public int OutFeatures => Weight.Dim(0);

    public void Forward(DeviceTensor y, DeviceTensor x, StepBatch batch) => Weight.Device.MatMul.Linear(y, x, Weight);

    public void Dispose() => Weight.Dispose();
}
