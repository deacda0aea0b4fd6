namespace LoraEngine.Cli;

/// <summary>The model shipped in the repository (models/vim-tiny-bf16) and its adapters (models/adapters/*).</summary>
internal static class ShippedModel
{
    /// <summary>The repository's models folder: searched from the working directory up, then from the executable up.</summary>
    public static string? ModelsFolder()
    {
        foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
            for (var dir = new DirectoryInfo(start); dir != null; dir = dir.Parent)
            {
                string candidate = Path.Combine(dir.FullName, "models", "vim-tiny-bf16");
                if (File.Exists(Path.Combine(candidate, "config.json"))) return Path.Combine(dir.FullName, "models");
            }
        return null;
    }

    public static string DefaultModel() =>
        ModelsFolder() is { } models ? Path.Combine(models, "vim-tiny-bf16")
        : throw new DirectoryNotFoundException("no --model given and the shipped model (models/vim-tiny-bf16) was not found");

    /// <summary>The shipped adapters by name (vim-upper, vim-rot13).</summary>
    public static IReadOnlyDictionary<string, string> Adapters() =>
        ModelsFolder() is { } models && Directory.Exists(Path.Combine(models, "adapters"))
            ? Directory.GetDirectories(Path.Combine(models, "adapters")).ToDictionary(d => Path.GetFileName(d)!, d => d)
            : new Dictionary<string, string>();
}
