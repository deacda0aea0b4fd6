namespace LoraEngine.Server;

/// <summary>A statically registered adapter (vLLM's --lora-modules name=path, or its JSON form).</summary>
/// <param name="Name">The name requests put in their model field.</param>
/// <param name="Path">The PEFT adapter folder (adapter_config.json and adapter_model.safetensors); not confined to the LoRA root.</param>
/// <param name="BaseModelName">The parent /v1/models reports for it; null: the served model name.</param>
public sealed record LoraModule(string Name, string Path, string? BaseModelName = null);

/// <summary>How to serve: the engine's arguments plus vLLM serve's options.</summary>
public sealed record ServerOptions
{
    /// <summary>The engine's arguments (model folder, device, LoRA slots, limits); the engine is built from them when the host starts.</summary>
    public required EngineArgs Engine { get; init; }
    /// <summary>The address <see cref="ServerHost"/> listens on (an application hosting the routes uses its own Kestrel settings). Default 127.0.0.1.</summary>
    public string Host { get; init; } = "127.0.0.1";
    /// <summary>0 picks a free port.</summary>
    public int Port { get; init; } = 8000;
    /// <summary>The base model's id in the API; defaults to the model folder's name.</summary>
    public string? ServedModelName { get; init; }
    /// <summary>Adapters loaded when the host starts; a bad one stops the start with the loader's message.</summary>
    public IReadOnlyList<LoraModule> LoraModules { get; init; } = [];
    /// <summary>When set, every /v1 route needs "Authorization: Bearer {ApiKey}".</summary>
    public string? ApiKey { get; init; }
    /// <summary>Registers /v1/load_lora_adapter and /v1/unload_lora_adapter.</summary>
    public bool AllowRuntimeLoraUpdating { get; init; }
    /// <summary>Runtime-loaded adapters must lie inside this folder (symbolic links resolved, checked at every read).</summary>
    public string? LoraRoot { get; init; }
    /// <summary>Largest request body; a larger one is refused with 413 before anything parses it. Default 16 MiB.</summary>
    public long MaxRequestBodyBytes { get; init; } = 16 << 20;
    /// <summary>On shutdown (SIGTERM), how long requests in flight may take to finish before they are aborted with an error event. Default 30 s.</summary>
    public TimeSpan DrainTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Throws ArgumentException naming an option out of range.</summary>
    public void Validate()
    {
        if (Port is < 0 or > 65535) throw new ArgumentOutOfRangeException(nameof(Port), Port, $"port must be in 0..65535, got {Port}");
        if (MaxRequestBodyBytes <= 0) throw new ArgumentOutOfRangeException(nameof(MaxRequestBodyBytes), MaxRequestBodyBytes, $"max request body bytes must be positive, got {MaxRequestBodyBytes}");
        if (DrainTimeout < TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(DrainTimeout), DrainTimeout, $"drain timeout must not be negative, got {DrainTimeout.TotalSeconds} s");
        if (AllowRuntimeLoraUpdating && LoraRoot is { } root && !Directory.Exists(root))
            throw new ArgumentException($"--lora-root '{root}' is not a folder", nameof(LoraRoot));
        // The root confines runtime loads only: without them it would be accepted and do nothing.
        if (!AllowRuntimeLoraUpdating && LoraRoot != null)
            throw new ArgumentException("--lora-root confines adapters loaded at run time: it needs --allow-runtime-lora-updating", nameof(LoraRoot));
        // vLLM reads an empty key as none; here it would ask every client for "Bearer " and nothing more: refused.
        if (ApiKey is { Length: 0 }) throw new ArgumentException("--api-key is empty: give a key, or leave the option out to serve without one", nameof(ApiKey));
        // The model field resolves the base model's name first, and a repeated name would replace the earlier adapter:
        // either adapter could never be used.
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var module in LoraModules)
        {
            if (module.Name == ModelId) throw new ArgumentException($"--lora-modules '{module.Name}' is the base model's name; choose another", nameof(LoraModules));
            if (!names.Add(module.Name)) throw new ArgumentException($"--lora-modules names '{module.Name}' twice", nameof(LoraModules));
        }
    }

    /// <summary>The base model's id in the API: <see cref="ServedModelName"/>, else the model folder's name.</summary>
    public string ModelId => ServedModelName ?? System.IO.Path.GetFileName(System.IO.Path.TrimEndingDirectorySeparator(Engine.Model));
}
