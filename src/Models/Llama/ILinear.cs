using LoraEngine.Tensors;
using LoraEngine.Tensors.Kernels;

namespace LoraEngine.Models.Llama;

/// <summary>
/// A projection y = W·x as the model sees it. The model knows no adapters: the LoRA layer wraps an ILinear and
/// reads its per-step metadata from <see cref="StepBatch.LinearContext"/>.
/// </summary>
public interface ILinear
{
    /// <summary>Width of the input x.</summary>
    int InFeatures { get; }

    /// <summary>Width of the output y.</summary>
    int OutFeatures { get; }

    /// <summary>y = this linear applied to x (overwrites y).</summary>
    /// <param name="y">[tokens, OutFeatures] F32</param>
    /// <param name="x">[tokens, InFeatures] F32</param>
    /// <param name="batch">the step's metadata, passed through untouched</param>
    void Forward(DeviceTensor y, DeviceTensor x, StepBatch batch);

    /// <summary>[out, in] the dense weight of the base product W·x, which linears sharing an input compute in one launch.</summary>
    DeviceTensor BaseWeight { get; }

    /// <summary>Adds to y what this linear computes beyond <see cref="BaseWeight"/>·x (a LoRA delta; nothing for a dense linear).</summary>
    void AddDelta(DeviceTensor y, DeviceTensor x, StepBatch batch);

    /// <summary>
    /// <see cref="Forward"/>, except that what remains may be left for the op that reads y next to add as it reads
    /// (a LoRA expand: one launch fewer). y + the result (null: nothing) is this linear's output, bit for bit.
    /// </summary>
    /// <param name="y">[tokens, OutFeatures] F32</param>
    /// <param name="x">[tokens, InFeatures] F32</param>
    /// <param name="batch">the step's metadata, passed through untouched</param>
    PendingExpand? ForwardPending(DeviceTensor y, DeviceTensor x, StepBatch batch)
    {
        Forward(y, x, batch);
        return null;
    }
}

/// <summary>
/// A linear that can compute several linears sharing one input at once, base products and deltas (the LoRA layer: the
/// q/k/v base products and every slot's shrink in one launch, one expand). <see cref="SharedInputLinears"/> asks the
/// first linear of a group.
/// </summary>
public interface ISharedInputGroup
{
    /// <summary>
    /// y_i = linear_i(x) for every pair, each exactly as <c>linear_i.Forward(y_i, x, batch)</c> would give it, when it
    /// can compute them together; false, with nothing written, when it cannot.
    /// </summary>
    /// <param name="x">[tokens, in] F32, the input every linear reads</param>
    /// <param name="batch">the step's metadata</param>
    /// <param name="outputs">(y_i [tokens, out_i] F32, linear_i)</param>
    bool TryForward(DeviceTensor x, StepBatch batch, ReadOnlySpan<(DeviceTensor Y, ILinear Linear)> outputs);

    /// <summary>
    /// <see cref="TryForward"/>, except that what remains of y_i may be left in <paramref name="pending"/>[i] for the op that
    /// reads y_i next (<see cref="ILinear.ForwardPending"/>); entries left null need nothing more.
    /// </summary>
    /// <param name="x">[tokens, in] F32, the input every linear reads</param>
    /// <param name="batch">the step's metadata</param>
    /// <param name="outputs">(y_i [tokens, out_i] F32, linear_i)</param>
    /// <param name="pending">one entry per output, null on entry</param>
    bool TryForwardPending(DeviceTensor x, StepBatch batch, ReadOnlySpan<(DeviceTensor Y, ILinear Linear)> outputs, Span<PendingExpand?> pending) =>
        TryForward(x, batch, outputs);
}

/// <summary>Linears that read the same input (q/k/v, gate/up): one fused base product, then their deltas.</summary>
public static class SharedInputLinears
{
    /// <summary>y_i = linear_i(x) for every pair.</summary>
    public static void Forward(DeviceTensor x, StepBatch batch, params ReadOnlySpan<(DeviceTensor Y, ILinear Linear)> outputs)
    {
        if (outputs.Length > 0 && outputs[0].Linear is ISharedInputGroup group && group.TryForward(x, batch, outputs)) return;
        Span<(DeviceTensor, DeviceTensor)> products = new (DeviceTensor, DeviceTensor)[outputs.Length];
        for (int i = 0; i < outputs.Length; i++) products[i] = (outputs[i].Y, outputs[i].Linear.BaseWeight);
        x.Device.MatMul.LinearGroup(x, products);
        foreach (var (y, linear) in outputs) linear.AddDelta(y, x, batch);
    }

    /// <summary>
    /// y_i = linear_i(x) for every pair, what remains of y_i perhaps left in <paramref name="pending"/>[i] for the op that
    /// reads y_i next (<see cref="ISharedInputGroup.TryForwardPending"/>).
    /// </summary>
    /// <param name="x">[tokens, in] F32</param>
    /// <param name="batch">the step's metadata</param>
    /// <param name="pending">empty (every y_i whole) or one entry per output, null on return where y_i is whole</param>
    /// <param name="outputs">(y_i [tokens, out_i] F32, linear_i)</param>
    public static void ForwardPending(DeviceTensor x, StepBatch batch, Span<PendingExpand?> pending, params ReadOnlySpan<(DeviceTensor Y, ILinear Linear)> outputs)
    {
        if (pending.Length != 0 && pending.Length != outputs.Length) throw new ArgumentException($"{pending.Length} pending entries for {outputs.Length} outputs", nameof(pending));
        pending.Clear();
        if (outputs.Length > 0 && outputs[0].Linear is ISharedInputGroup group && group.TryForwardPending(x, batch, outputs, pending)) return;
        Forward(x, batch, outputs);
    }
}

/// <summary>A plain linear layer over a weight stored [out, in] as in safetensors, in its stored dtype.</summary>
public sealed class DenseLinear(DeviceTensor weight) : ILinear, IDisposable
{
    /// <summary>[out, in] F32, F16 or BF16.</summary>
    public DeviceTensor Weight { get; } = weight;

    /// <inheritdoc/>
    public int InFeatures => Weight.Dim(1);

    /// <inheritdoc/>
    public int OutFeatures => Weight.Dim(0);

    /// <summary>y [tokens, out] = x [tokens, in] · Weightᵀ.</summary>
    /// <inheritdoc cref="ILinear.Forward"/>
    public void Forward(DeviceTensor y, DeviceTensor x, StepBatch batch) => Weight.Device.MatMul.Linear(y, x, Weight);

    /// <summary>The <see cref="Weight"/> itself.</summary>
    public DeviceTensor BaseWeight => Weight;

    /// <summary>Nothing: a dense linear is its base product alone.</summary>
    /// <inheritdoc cref="ILinear.AddDelta"/>
    public void AddDelta(DeviceTensor y, DeviceTensor x, StepBatch batch)
    {
    }

    /// <summary>Frees the weight.</summary>
    public void Dispose() => Weight.Dispose();
}
