using Xunit;

namespace LoraEngine.Server.Tests;

/// <summary>ServerOptions.Validate: options that cannot work are refused at start, naming the option.</summary>
public class ServerOptionsTests
{
    static ServerOptions With(params LoraModule[] modules) =>
        new() { Engine = new EngineArgs { Model = "models/vim-tiny-bf16" }, LoraModules = modules };

    // Either name would be unreachable: the model field resolves the base model first, and a repeated name replaced
    // the earlier adapter in the registry while the engine kept it loaded.
    [Fact]
    public void Lora_modules_may_not_repeat_a_name_or_take_the_base_models()
    {
        var twice = Assert.Throws<ArgumentException>(() => With(new LoraModule("a", "x"), new LoraModule("a", "y")).Validate());
        Assert.Equal(nameof(ServerOptions.LoraModules), twice.ParamName);
        Assert.Contains("'a'", twice.Message);
        var shadow = Assert.Throws<ArgumentException>(() => With(new LoraModule("vim-tiny-bf16", "x")).Validate());
        Assert.Contains("base model", shadow.Message);
        With(new LoraModule("a", "x"), new LoraModule("b", "x")).Validate();
    }

    [Fact]
    public void An_application_embedding_the_engine_gets_the_same_checks()
    {
        var services = new Microsoft.Extensions.DependencyInjection.ServiceCollection();
        var e = Assert.Throws<ArgumentException>(() => services.AddLoraEngine(With(new LoraModule("a", "x"), new LoraModule("a", "y"))));
        Assert.Equal(nameof(ServerOptions.LoraModules), e.ParamName);
        Assert.Empty(services); // nothing registered
    }
}
