using LoraEngine.Lora;
using Xunit;

namespace LoraEngine.Lora.Tests;

/// <summary>Real paths through links (absolute, relative, chained, with ".."), loops refused, containment by real path.</summary>
public sealed class AdapterPathsTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("loraengine-paths-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    string Real(string relative) => Path.Combine(AdapterPaths.RealPath(_dir), relative);

    [Fact]
    public void Links_are_followed_component_by_component_like_realpath()
    {
        Directory.CreateDirectory(Path.Combine(_dir, "a", "b"));
        File.WriteAllText(Path.Combine(_dir, "a", "b", "f"), "x");
        Directory.CreateSymbolicLink(Path.Combine(_dir, "abs"), Path.Combine(_dir, "a"));       // absolute target
        Directory.CreateSymbolicLink(Path.Combine(_dir, "a", "rel"), "b");                      // relative to its folder
        File.CreateSymbolicLink(Path.Combine(_dir, "a", "b", "up"), "../b/f");                  // ".." climbs from the real folder
        Directory.CreateSymbolicLink(Path.Combine(_dir, "chain"), "abs/rel");                   // a link through a link
        Assert.Equal(Real("a/b/f"), AdapterPaths.RealPath(Path.Combine(_dir, "abs", "rel", "f")));
        Assert.Equal(Real("a/b/f"), AdapterPaths.RealPath(Path.Combine(_dir, "chain", "up")));
        Assert.Equal(Real("a/b/missing"), AdapterPaths.RealPath(Path.Combine(_dir, "chain", "missing")));
    }

    [Fact]
    public void A_link_loop_is_an_io_exception()
    {
        File.CreateSymbolicLink(Path.Combine(_dir, "self"), Path.Combine(_dir, "self"));
        Directory.CreateSymbolicLink(Path.Combine(_dir, "ping"), "pong");
        Directory.CreateSymbolicLink(Path.Combine(_dir, "pong"), "ping");
        Assert.Throws<IOException>(() => AdapterPaths.RealPath(Path.Combine(_dir, "self")));
        Assert.Throws<IOException>(() => AdapterPaths.RealPath(Path.Combine(_dir, "ping", "adapter_config.json")));
    }

    [Fact]
    public void Inside_compares_whole_components()
    {
        Assert.True(AdapterPaths.IsInside("/srv/loras/a", "/srv/loras"));
        Assert.True(AdapterPaths.IsInside("/srv/loras", "/srv/loras/"));
        Assert.False(AdapterPaths.IsInside("/srv/loras-evil/a", "/srv/loras"));
        Assert.False(AdapterPaths.IsInside("/srv", "/srv/loras"));
    }
}
