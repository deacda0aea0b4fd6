using LoraEngine.Tensors;

namespace LoraEngine.Lora;

/// <summary>
/// LoRA metadata of one step, built once and read by every LoRA layer (vLLM's punica metadata):
/// the GPU slot of each token, -1 for tokens without an adapter. Layers never see request ids.
/// </summary>
public sealed class LoraBatchMapping
{
    public LoraBatchMapping(DeviceTensor tokenSlots, bool anyAdapter)
    {
        TokenSlots = tokenSlots;
        AnyAdapter = anyAdapter;
    }

    /// <summary>[T] I32 slot of each token of the step, -1 = base model only.</summary>
    public DeviceTensor TokenSlots { get; }

    /// <summary>False when no token of the step uses an adapter: the LoRA path is skipped entirely.</summary>
    public bool AnyAdapter { get; }
}
