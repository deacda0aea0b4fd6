namespace LoraEngine;

/// <summary>
/// Names the LoRA adapter a request runs with (vLLM's LoRARequest): a human name, a globally unique id &gt; 0,
/// and the folder holding adapter_config.json and adapter_model.safetensors.
/// </summary>
public sealed record LoraRequest(string LoraName, int LoraIntId, string LoraPath)
{
    /// <summary>
    /// Read the adapter from disk again even when it is loaded, replacing the loaded copy (vLLM's load_inplace). Every
    /// unfinished request of this adapter switches to the new weights from its next step; tokens already generated stay.
    /// </summary>
    public bool LoadInplace { get; init; }

    /// <summary>
    /// When set, the adapter's folder and files must really lie inside this folder (symbolic links resolved), checked at
    /// every read: this load and any later reload after the adapter left the CPU cache. The server sets it from --lora-root.
    /// </summary>
    public string? LoraRoot { get; init; }

    /// <summary>Throws ArgumentException with vLLM's texts for an id ≤ 0 or an empty path or name.</summary>
    public void Validate()
    {
        if (LoraIntId <= 0) throw new ArgumentException($"id must be > 0, got {LoraIntId}", nameof(LoraIntId));
        if (string.IsNullOrWhiteSpace(LoraPath)) throw new ArgumentException("lora_path cannot be empty", nameof(LoraPath));
        if (string.IsNullOrWhiteSpace(LoraName)) throw new ArgumentException("lora_name cannot be empty", nameof(LoraName));
    }
}
