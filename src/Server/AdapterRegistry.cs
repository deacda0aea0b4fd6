using System.Collections.Concurrent;

namespace LoraEngine.Server;

/// <summary>The adapters the server exposes as models: name → LoraRequest (ids from a counter, as vLLM does).</summary>
public sealed class AdapterRegistry(string? loraRoot)
{
    readonly ConcurrentDictionary<string, (LoraRequest Request, string? Parent)> _byName = new(StringComparer.Ordinal);
    int _nextId;

    public IEnumerable<(LoraRequest Request, string? Parent)> All => _byName.Values.OrderBy(a => a.Request.LoraIntId);

    public LoraRequest? Find(string name) => _byName.TryGetValue(name, out var a) ? a.Request : null;

    public bool Contains(string name) => _byName.ContainsKey(name);

    public LoraRequest Create(string name, string path) => new(name, Interlocked.Increment(ref _nextId), Path.GetFullPath(path));

    public void Add(LoraRequest request, string? parent) => _byName[request.LoraName] = (request, parent);

    public bool Remove(string name, out LoraRequest? request)
    {
        bool removed = _byName.TryRemove(name, out var entry);
        request = removed ? entry.Request : null;
        return removed;
    }

    /// <summary>
    /// Checks that a runtime-loaded adapter lies inside the LoRA root: no "..", and after resolving symbolic links
    /// (of the folder and its files) still inside. Returns an error message, or null when the path is allowed.
    /// </summary>
    public string? CheckConfined(string path)
    {
        if (loraRoot is null) return "runtime LoRA loading needs --lora-root: adapters are only loaded from inside it";
        if (path.Split('/', '\\').Contains("..")) return $"lora_path '{path}' may not contain '..'";
        string root = Path.TrimEndingDirectorySeparator(Path.GetFullPath(ResolveLinks(loraRoot)));
        string full = Path.IsPathRooted(path) ? path : Path.Combine(root, path);
        string resolved = Path.GetFullPath(ResolveLinks(full));
        if (!Inside(resolved, root)) return $"lora_path '{path}' is outside the LoRA root";
        if (Directory.Exists(resolved))
            foreach (var file in Directory.EnumerateFiles(resolved))
                if (!Inside(Path.GetFullPath(ResolveLinks(file)), root)) return $"lora_path '{path}' holds a link that leads outside the LoRA root";
        return null;
    }

    /// <summary>The path with every symbolic-link component replaced by its final target.</summary>
    static string ResolveLinks(string path)
    {
        string full = Path.GetFullPath(path);
        string current = Path.GetPathRoot(full)!;
        foreach (var part in full[current.Length..].Split(Path.DirectorySeparatorChar, StringSplitOptions.RemoveEmptyEntries))
        {
            current = Path.Combine(current, part);
            FileSystemInfo info = Directory.Exists(current) ? new DirectoryInfo(current) : new FileInfo(current);
            if (info.Exists && info.LinkTarget != null) current = info.ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? current;
        }
        return current;
    }

    static bool Inside(string path, string root) => path == root || path.StartsWith(root + Path.DirectorySeparatorChar, StringComparison.Ordinal);
}
