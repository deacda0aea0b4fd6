namespace LoraEngine.Lora;

/// <summary>
/// Where an adapter's files really are. <see cref="RealPath"/> resolves every symbolic link of a path as the
/// operating system would (POSIX realpath, in managed code); <see cref="IsInside"/> compares real paths. An adapter
/// confined to a root is checked at every read (see <see cref="LoraAdapter.Load(string, string, Models.LlamaConfig, int, string?)"/>),
/// so a link repointed after a load cannot lead a later reload outside the root.
/// </summary>
public static class AdapterPaths
{
    /// <summary>Links followed while resolving one path before it counts as a loop (Linux's limit).</summary>
    public const int MaxLinks = 40;

    /// <summary>
    /// The absolute path with every symbolic link replaced by its target, component by component (a link's
    /// relative target is read from the link's folder; ".." inside a target climbs from the resolved folder).
    /// Components that do not exist are kept as they are. Throws <see cref="IOException"/> for a link loop.
    /// </summary>
    public static string RealPath(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        string full = Path.GetFullPath(path);
        string current = Path.GetPathRoot(full)!;
        var pending = new Stack<string>(Components(full[current.Length..]).Reverse());
        int links = 0;
        while (pending.TryPop(out var part))
        {
            if (part == ".") continue;
            if (part == "..")
            {
                current = Path.GetDirectoryName(current) ?? current;
                continue;
            }
            string next = Path.Join(current, part);
            string? target = new FileInfo(next).LinkTarget;
            if (target is null)
            {
                current = next;
                continue;
            }
            if (++links > MaxLinks) throw new IOException($"'{path}' holds a symbolic link loop (more than {MaxLinks} links to follow)");
            if (Path.IsPathRooted(target))
            {
                current = Path.GetPathRoot(target)!;
                target = target[current.Length..];
            }
            foreach (var c in Components(target).Reverse()) pending.Push(c);
        }
        return current;
    }

    /// <summary>Whether the real path <paramref name="realPath"/> is <paramref name="realRoot"/> or lies below it.</summary>
    public static bool IsInside(string realPath, string realRoot)
    {
        string root = Path.TrimEndingDirectorySeparator(realRoot);
        return realPath == root || realPath.StartsWith(root + Path.DirectorySeparatorChar, StringComparison.Ordinal);
    }

    static IEnumerable<string> Components(string relative) =>
        relative.Split([Path.DirectorySeparatorChar, Path.AltDirectorySeparatorChar], StringSplitOptions.RemoveEmptyEntries);
}

/// <summary>
/// The files of one adapter read: without a root, the folder as given; with a root, the folder and every file
/// resolved to their real paths now and refused unless they lie inside the real root.
/// </summary>
internal sealed class AdapterFiles
{
    readonly string? _realRoot;
    readonly string _path;
    readonly Func<string, Exception?, LoraException> _fault;

    AdapterFiles(string folder, string path, string? realRoot, Func<string, Exception?, LoraException> fault)
    {
        Folder = folder;
        _path = path;
        _realRoot = realRoot;
        _fault = fault;
    }

    public string Folder { get; }

    public static AdapterFiles Locate(string path, string? loraRoot, Func<string, Exception?, LoraException> fault)
    {
        if (loraRoot is null) return new AdapterFiles(path, path, null, fault);
        string realRoot = Resolve(loraRoot, path, fault);
        var files = new AdapterFiles(Resolve(path, path, fault), path, realRoot, fault);
        files.Confine(files.Folder);
        return files;
    }

    /// <summary>The path to read <paramref name="name"/> from (its real path when confined).</summary>
    public string File(string name)
    {
        string file = Path.Join(Folder, name);
        if (_realRoot is null) return file;
        string real = Resolve(file, _path, _fault);
        Confine(real);
        return real;
    }

    void Confine(string realPath)
    {
        if (!AdapterPaths.IsInside(realPath, _realRoot!)) throw _fault($"lora_path '{_path}' leads outside the LoRA root", null);
    }

    static string Resolve(string path, string loraPath, Func<string, Exception?, LoraException> fault)
    {
        try
        {
            return AdapterPaths.RealPath(path);
        }
        catch (IOException e)
        {
            throw fault($"lora_path '{loraPath}' holds a symbolic link loop", e);
        }
    }
}
