namespace LoraEngine.TestSupport;

/// <summary>
/// Paths of the shared reference fixtures. They live in ../shared/fixtures beside the repository
/// (LORAENGINE_FIXTURES overrides, e.g. on the GPU machine where they are carried along).
/// </summary>
public static class Fixtures
{
    static readonly Lazy<string> s_root = new(FindRoot);

    public static string Root => s_root.Value;

    public static string Model(string name) => Path.Combine(Root, "models", name);

    public static string Adapter(string name) => Path.Combine(Root, "adapters", name);

    public static string Golden(string file) => Path.Combine(Root, "golden", file);

    static string FindRoot()
    {
        string? env = Environment.GetEnvironmentVariable("LORAENGINE_FIXTURES");
        if (!string.IsNullOrEmpty(env)) return env;
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, "shared", "fixtures");
            if (Directory.Exists(Path.Combine(candidate, "golden"))) return candidate;
            candidate = Path.Combine(dir.FullName, "fixtures");
            if (Directory.Exists(Path.Combine(candidate, "golden"))) return candidate;
        }
        throw new DirectoryNotFoundException("reference fixtures not found: expected ../shared/fixtures beside the repository or LORAENGINE_FIXTURES");
    }
}
