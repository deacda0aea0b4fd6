using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using LoraEngine.TestSupport;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.Configuration;
using Xunit;

namespace LoraEngine.Server.Tests;

/// <summary>The engine embedded in an application of its own: AddLoraEngine from configuration, routes under a prefix.</summary>
public sealed class LoraEngineExtensionsTests : IAsyncLifetime
{
    WebApplication _app = null!;
    HttpClient _http = null!;

    public async ValueTask InitializeAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["LoraEngine:Engine:Model"] = Fixtures.Model("vim-tiny-bf16"),
            ["LoraEngine:Engine:Device"] = ServerFixture.Device,
            ["LoraEngine:Engine:EnableLora"] = "true",
            ["LoraEngine:Engine:NumGpuBlocksOverride"] = "256",
            ["LoraEngine:Engine:DisableLogStats"] = "true",
            ["LoraEngine:ServedModelName"] = "tiny",
            ["LoraEngine:ApiKey"] = "k",
            ["LoraEngine:AllowRuntimeLoraUpdating"] = "true",
            ["LoraEngine:LoraRoot"] = Path.GetDirectoryName(Fixtures.Adapter("vim-upper")),
            ["LoraEngine:LoraModules:0:Name"] = "vim-upper",
            ["LoraEngine:LoraModules:0:Path"] = Fixtures.Adapter("vim-upper"),
        });
        builder.Services.AddLoraEngine(builder.Configuration.GetSection(LoraEngineServiceCollectionExtensions.ConfigurationSection));
        _app = builder.Build();
        _app.MapGroup("/llm").MapOpenAiEndpoints();
        _app.MapLoraAdmin();
        await _app.StartAsync();
        _http = new HttpClient { BaseAddress = new Uri(_app.Urls.First()) };
        _http.DefaultRequestHeaders.Authorization = new("Bearer", "k");
    }

    public async ValueTask DisposeAsync()
    {
        _http.Dispose();
        await _app.StopAsync();
        await _app.DisposeAsync();
    }

    [Fact]
    public async Task Completion_through_the_mounted_prefix_with_an_adapter_from_configuration()
    {
        var response = await _http.PostAsJsonAsync("/llm/v1/completions", new { model = "vim-upper", prompt = "Vim is", max_tokens = 4, temperature = 0 },
            TestContext.Current.CancellationToken);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        using var body = JsonDocument.Parse(await response.Content.ReadAsStringAsync(TestContext.Current.CancellationToken));
        Assert.Equal("vim-upper", body.RootElement.GetProperty("model").GetString());
        Assert.Equal(4, body.RootElement.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
    }

    [Fact]
    public async Task Api_key_from_configuration_guards_the_v1_routes_only()
    {
        using var anonymous = new HttpClient { BaseAddress = _http.BaseAddress };
        var response = await anonymous.GetAsync("/llm/v1/models", TestContext.Current.CancellationToken);
        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await anonymous.GetAsync("/health", TestContext.Current.CancellationToken)).StatusCode);
        var tokenize = await anonymous.PostAsJsonAsync("/llm/tokenize", new { prompt = "Vim" }, TestContext.Current.CancellationToken);
        Assert.Equal(HttpStatusCode.OK, tokenize.StatusCode); // open, as vLLM's tokenizer routes
        var unload = await anonymous.PostAsJsonAsync("/v1/unload_lora_adapter", new { lora_name = "vim-upper" }, TestContext.Current.CancellationToken);
        Assert.Equal(HttpStatusCode.Unauthorized, unload.StatusCode);
    }

    [Fact]
    public async Task Health_check_reports_the_running_engine()
    {
        var response = await _http.GetAsync("/health", TestContext.Current.CancellationToken);
        Assert.Equal("Healthy", await response.Content.ReadAsStringAsync(TestContext.Current.CancellationToken));
        var state = (ServerState)_app.Services.GetService(typeof(ServerState))!;
        var result = await new LoraEngineHealthCheck(state).CheckHealthAsync(new(), TestContext.Current.CancellationToken);
        Assert.Equal("tiny", result.Data["model"]);
    }

    [Fact]
    public async Task Runtime_loading_reads_snake_case_and_refuses_a_malformed_body()
    {
        var ok = await _http.PostAsJsonAsync("/v1/load_lora_adapter", new { lora_name = "rot", lora_path = "vim-rot13" }, TestContext.Current.CancellationToken);
        Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
        var bad = await _http.PostAsync("/v1/load_lora_adapter", new StringContent("{", System.Text.Encoding.UTF8, "application/json"), TestContext.Current.CancellationToken);
        Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
        Assert.Contains("not valid JSON", await bad.Content.ReadAsStringAsync(TestContext.Current.CancellationToken));
        // Valid JSON nested past the reader's depth limit is told apart from a syntax error.
        string deep = "{\"lora_name\": \"x\", \"lora_path\": \"y\", \"extra\": " + new string('[', 200) + new string(']', 200) + "}";
        var tooDeep = await _http.PostAsync("/v1/load_lora_adapter", new StringContent(deep, System.Text.Encoding.UTF8, "application/json"), TestContext.Current.CancellationToken);
        Assert.Equal(HttpStatusCode.BadRequest, tooDeep.StatusCode);
        Assert.Contains("more than 64 levels deep", await tooDeep.Content.ReadAsStringAsync(TestContext.Current.CancellationToken));
    }

    [Fact]
    public void Configuration_without_a_model_is_refused_by_name()
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?> { ["LoraEngine:ApiKey"] = "k" }).Build();
        var e = Assert.Throws<ArgumentException>(() => new Microsoft.Extensions.DependencyInjection.ServiceCollection().AddLoraEngine(configuration.GetSection("LoraEngine")));
        Assert.Contains("Engine:Model", e.Message);
    }
}
