using System.CommandLine;
using System.Text.Json;
using LoraEngine.Server;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace LoraEngine.Cli;

/// <summary><c>loraengine serve</c>: the OpenAI-compatible server (flags as vLLM's <c>vllm serve</c>).</summary>
internal static class ServeCommand
{
    public static Command Create()
    {
        var common = new CommonOptions();
        var host = new Option<string>("--host") { DefaultValueFactory = _ => "127.0.0.1" };
        var port = new Option<int>("--port") { DefaultValueFactory = _ => 8000 };
        var loraModules = new Option<string[]>("--lora-modules") { AllowMultipleArgumentsPerToken = true, Description = "name=path, or JSON {\"name\",\"path\",\"base_model_name\"}" };
        var apiKey = new Option<string?>("--api-key") { Description = "Require Authorization: Bearer KEY on /v1 routes" };
        var allowRuntime = new Option<bool>("--allow-runtime-lora-updating") { Description = "Enable /v1/load_lora_adapter and /v1/unload_lora_adapter" };
        var loraRoot = new Option<string?>("--lora-root") { Description = "Folder runtime-loaded adapters must lie in" };
        var servedName = new Option<string?>("--served-model-name");
        var command = new Command("serve", "Serve the OpenAI-compatible API") { host, port, loraModules, apiKey, allowRuntime, loraRoot, servedName };
        common.AddTo(command);
        command.SetAction(async (p, ct) =>
        {
            bool shipped = p.GetValue(common.Model) is null;
            var modules = (p.GetValue(loraModules) ?? []).Select(Parse).ToList();
            if (shipped && modules.Count == 0)
                modules.AddRange(ShippedModel.Adapters().Select(a => new LoraModule(a.Key, a.Value)));
            var options = new ServerOptions
            {
                Engine = common.EngineArgs(p),
                Host = p.GetValue(host)!,
                Port = p.GetValue(port),
                LoraModules = modules,
                ApiKey = p.GetValue(apiKey),
                AllowRuntimeLoraUpdating = p.GetValue(allowRuntime),
                LoraRoot = p.GetValue(loraRoot),
                ServedModelName = p.GetValue(servedName),
            };
            // A thin host over the same building blocks an application embeds.
            var builder = WebApplication.CreateSlimBuilder();
            builder.WebHost.UseUrls($"http://{options.Host}:{options.Port}");
            builder.Logging.ClearProviders().AddSimpleConsole(o => o.SingleLine = true)
                .SetMinimumLevel(LogLevel.Information).AddFilter("Microsoft", LogLevel.Warning);
            builder.Services.AddLoraEngine(options);
            await using var app = builder.Build();
            app.MapOpenAiEndpoints();
            app.MapLoraAdmin();
            await app.StartAsync(ct);
            app.Services.GetRequiredService<ILoggerFactory>().CreateLogger("loraengine").LogInformation("Serving {Model} with adapters [{Adapters}] on {Urls}",
                options.ModelId, string.Join(", ", modules.Select(m => m.Name)), string.Join(", ", app.Urls));
            await app.WaitForShutdownAsync(ct);
            return 0;
        });
        return command;
    }

    static LoraModule Parse(string value)
    {
        if (value.TrimStart().StartsWith('{'))
        {
            using var doc = JsonDocument.Parse(value);
            var r = doc.RootElement;
            return new LoraModule(r.GetProperty("name").GetString()!, r.GetProperty("path").GetString()!,
                r.TryGetProperty("base_model_name", out var b) ? b.GetString() : null);
        }
        var (name, path) = CommonOptions.ParseLora(value);
        return new LoraModule(name, path);
    }
}
