namespace LoraEngine.Tensors.Kernels;

/// <summary>
/// A LoRA expand not yet added to the output it belongs to: y[t, o] += B[slot[t], o, :] · shrinks[t, Column + slot[t] · rank + r]
/// (r &lt; rank; tokens with slot −1 untouched), one member of a stacked shrink (<see cref="LoraOps.ExpandStacked"/>). The
/// op that reads y next adds it as it reads (<see cref="NormOps.AddRmsNorm(DeviceTensor, DeviceTensor, DeviceTensor, PendingExpand?, DeviceTensor, float)"/>,
/// <see cref="ElementwiseOps.SwiGlu(DeviceTensor, DeviceTensor, DeviceTensor, PendingExpand?, PendingExpand?)"/>) instead of a
/// launch of its own; whatever the op, the values are those <see cref="LoraOps.ExpandAt"/> gives y. It holds until the
/// shrinks are written again: the LoRA linears of a model share one shrink buffer, so the next LoRA linear's forward ends it.
/// </summary>
/// <param name="TokenSlots">[tokens] I32</param>
/// <param name="Shrinks">[tokens, columns] F32, every slot's A·x</param>
/// <param name="B">[slots, out, rank] F32/F16/BF16 (scale folded in)</param>
/// <param name="Column">where this member's columns begin in <paramref name="Shrinks"/></param>
public sealed record PendingExpand(DeviceTensor TokenSlots, DeviceTensor Shrinks, DeviceTensor B, int Column);
