using LoraEngine.Tensors;

namespace LoraEngine.Lora;

/// <summary>
/// LoRA metadata of one step, built once and read by every LoRA layer (vLLM's punica metadata):
/// the GPU slot of each token, -1 for tokens without an adapter. Layers never see request ids.
/// </summary>
public sealed class LoraBatchMapping
{
    /// <summary>Wraps the step's token → slot map; the mapping does not own the tensor.</summary>
    /// <param name="tokenSlots">[T] I32 slot of each token, -1 = none</param>
    /// <param name="anyAdapter">whether any entry of <paramref name="tokenSlots"/> is a slot (false skips every LoRA kernel)</param>
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
