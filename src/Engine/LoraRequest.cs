namespace LoraEngine;

/// <summary>
/// Names the LoRA adapter a request runs with (vLLM's LoRARequest): a human name, a globally unique id &gt; 0,
/// and the folder holding adapter_config.json and adapter_model.safetensors.
/// </summary>
public sealed record LoraRequest(string LoraName, int LoraIntId, string LoraPath)
{
    /// <summary>Throws ArgumentException with vLLM's texts for an id ≤ 0 or an empty path or name.</summary>
    public void Validate()
    {
        if (LoraIntId <= 0) throw new ArgumentException($"id must be > 0, got {LoraIntId}", nameof(LoraIntId));
        if (string.IsNullOrWhiteSpace(LoraPath)) throw new ArgumentException("lora_path cannot be empty", nameof(LoraPath));
        if (string.IsNullOrWhiteSpace(LoraName)) throw new ArgumentException("lora_name cannot be empty", nameof(LoraName));
    }
}
