using LoraEngine.Tensors;
using LoraEngine.TestSupport;
using Microsoft.AspNetCore.Builder;
using Xunit;

namespace LoraEngine.Server.Tests;

/// <summary>A server on a free loopback port over the BF16 fixture model with three adapters, runtime loading on.</summary>
public class ServerFixture : IAsyncLifetime
{
    public WebApplication App { get; private set; } = null!;
    public ServerState State { get; private set; } = null!;
    public string BaseUrl { get; private set; } = "";
    public string LoraRoot { get; } = Directory.CreateTempSubdirectory("loraengine-lora-root-").FullName;
    public const string ApiKey = "test-key";

    public static string Device => Environment.GetEnvironmentVariable(ComputeDevice.EnvironmentVariable) is { Length: > 0 } d ? d : "cpu";

    /// <summary>The options a test class's server runs with (subclasses change limits or timeouts).</summary>
    protected virtual ServerOptions Options(ServerOptions defaults) => defaults;

    public async ValueTask InitializeAsync()
    {
        var options = Options(new ServerOptions
        {
            Engine = new EngineArgs
            {
                Model = Fixtures.Model("vim-tiny-bf16"), Device = Device, EnableLora = true, MaxLoras = 3, MaxCpuLoras = 6,
                MaxNumSeqs = 64, MaxNumBatchedTokens = 2048, NumGpuBlocksOverride = 1024, DisableLogStats = true,
            },
            Port = 0,
            LoraModules = [new("vim-upper", Fixtures.Adapter("vim-upper")), new("vim-rot13", Fixtures.Adapter("vim-rot13")),
                new("vim-random-qv-r4", Fixtures.Adapter("vim-random-qv-r4"), "vim-tiny-bf16")],
            ApiKey = ApiKey,
            AllowRuntimeLoraUpdating = true,
            LoraRoot = LoraRoot,
        });
        App = ServerHost.Build(options);
        await App.StartAsync();
        BaseUrl = App.Urls.First();
        State = (ServerState)App.Services.GetService(typeof(ServerState))!;
    }

    public HttpClient Http()
    {
        var client = new HttpClient { BaseAddress = new Uri(BaseUrl) };
        client.DefaultRequestHeaders.Authorization = new("Bearer", ApiKey);
        return client;
    }

    public async ValueTask DisposeAsync()
    {
        await App.StopAsync();
        await App.DisposeAsync();
        Directory.Delete(LoraRoot, recursive: true);
    }
}
