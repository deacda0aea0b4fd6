using System.Collections.Concurrent;

namespace LoraEngine.Server;

/// <summary>The adapters the server exposes as models: name → LoraRequest (ids from a counter, as vLLM does). Thread-safe.</summary>
/// <param name="loraRoot">The folder runtime-loaded adapters must lie in (<see cref="ServerOptions.LoraRoot"/>); null: runtime loads are refused.</param>
public sealed class AdapterRegistry(string? loraRoot)
{
    readonly ConcurrentDictionary<string, (LoraRequest Request, string? Parent)> _byName = new(StringComparer.Ordinal);
    int _nextId;

    /// <summary>
    /// Held by a runtime load or unload from its first check to its last change, so the registry and the engine's
    /// adapters change together (a load racing an unload of the same name left the engine an adapter with no name).
    /// </summary>
    internal Lock Updates { get; } = new();

    /// <summary>Every adapter with the parent it was registered with (null: the base model), in registration order (by LoraIntId).</summary>
    public IEnumerable<(LoraRequest Request, string? Parent)> All => _byName.Values.OrderBy(a => a.Request.LoraIntId);

    /// <summary>The adapter registered under <paramref name="name"/> (ordinal), or null.</summary>
    public LoraRequest? Find(string name) => _byName.TryGetValue(name, out var a) ? a.Request : null;

    /// <summary>Whether an adapter is registered under <paramref name="name"/> (ordinal).</summary>
    public bool Contains(string name) => _byName.ContainsKey(name);

    /// <summary>A statically registered adapter (--lora-modules): trusted, not confined.</summary>
    public LoraRequest Create(string name, string path) => new(name, Interlocked.Increment(ref _nextId), Path.GetFullPath(path));

    /// <summary>
    /// A runtime-loaded adapter: confined to the LoRA root, so the engine checks the real path of its folder and files
    /// against the root at every read (this load and any reload after it left the CPU cache).
    /// </summary>
    public LoraRequest CreateConfined(string name, string path) =>
        new(name, Interlocked.Increment(ref _nextId), Path.GetFullPath(Path.IsPathRooted(path) ? path : Path.Combine(loraRoot!, path))) { LoraRoot = loraRoot };

    /// <summary>Registers <paramref name="request"/> under its LoraName, replacing any adapter of that name; <paramref name="parent"/> is what /v1/models reports (null: the base model).</summary>
    public void Add(LoraRequest request, string? parent) => _byName[request.LoraName] = (request, parent);

    /// <summary>Unregisters the adapter named <paramref name="name"/>; false (and a null <paramref name="request"/>) when there is none. The engine keeps it until told to remove it.</summary>
    public bool Remove(string name, out LoraRequest? request)
    {
        bool removed = _byName.TryRemove(name, out var entry);
        request = removed ? entry.Request : null;
        return removed;
    }

    /// <summary>
    /// Refuses a runtime load at once when there is no LoRA root or the path climbs with "..". Returns an error
    /// message, or null. Where the path really leads (links resolved) is checked by the engine at every read.
    /// </summary>
    public string? CheckConfined(string path)
    {
        if (loraRoot is null) return "runtime LoRA loading needs --lora-root: adapters are only loaded from inside it";
        if (path.Split('/', '\\').Contains("..")) return $"lora_path '{path}' may not contain '..'";
        return null;
    }
}
