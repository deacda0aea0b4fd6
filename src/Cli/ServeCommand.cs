using System.CommandLine;
using System.Text.Json;
using LoraEngine.Server;
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
        var maxBody = new Option<long>("--max-request-body-bytes") { Description = "Largest request body; larger ones get 413", DefaultValueFactory = _ => 16 << 20 };
        var drain = new Option<double>("--drain-timeout") { Description = "Seconds requests in flight may take to finish on shutdown (SIGTERM) before they are aborted", DefaultValueFactory = _ => 30 };
        var command = new Command("serve", "Serve the OpenAI-compatible API") { host, port, loraModules, apiKey, allowRuntime, loraRoot, servedName, maxBody, drain };
        common.AddTo(command);
        command.SetAction(async (p, ct) =>
        {
            bool shipped = p.GetValue(common.Model) is null;
            var modules = (p.GetValue(loraModules) ?? []).Select(Parse).ToList();
            if (shipped && modules.Count == 0)
                modules.AddRange(ShippedModel.Adapters().Select(a => new LoraModule(a.Key, a.Value)));
            bool verbose = p.GetValue(CliApp.Verbose);
            // The host's and Kestrel's own reports of a failed start (a port in use) carry a stack trace; the error line says it already.
            using var loggers = LoggerFactory.Create(b => b.AddSimpleConsole(o => o.SingleLine = true).SetMinimumLevel(LogLevel.Information)
                .AddFilter("Microsoft", LogLevel.Warning)
                .AddFilter("Microsoft.Extensions.Hosting", level => level >= LogLevel.Warning && (verbose || level < LogLevel.Error))
                .AddFilter("Microsoft.AspNetCore.Server.Kestrel", level => level >= LogLevel.Warning && (verbose || level < LogLevel.Critical)));
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
                MaxRequestBodyBytes = p.GetValue(maxBody),
                DrainTimeout = Seconds(p.GetValue(drain), "--drain-timeout"),
            };
            await using var app = ServerHost.Build(options, loggers);
            await app.StartAsync(ct);
            loggers.CreateLogger("loraengine").LogInformation("Serving {Model} with adapters [{Adapters}] on {Urls}",
                options.ModelId, string.Join(", ", modules.Select(m => m.Name)), string.Join(", ", app.Urls));
            await app.WaitForShutdownAsync(ct);
            return 0;
        });
        return command;
    }

    /// <summary>A number of seconds from the command line; NaN, infinities and values past TimeSpan's range are refused by name.</summary>
    static TimeSpan Seconds(double seconds, string option) =>
        double.IsFinite(seconds) && Math.Abs(seconds) < TimeSpan.MaxValue.TotalSeconds
            ? TimeSpan.FromSeconds(seconds)
            : throw new ArgumentException($"{option} must be a finite number of seconds, got {seconds}");

    static LoraModule Parse(string value)
    {
        if (value.TrimStart().StartsWith('{'))
        {
            JsonDocument doc;
            try
            {
                doc = JsonDocument.Parse(value);
            }
            catch (JsonException e)
            {
                throw new ArgumentException($"--lora-modules: not valid JSON (byte {e.BytePositionInLine + 1})", e);
            }
            using (doc)
            {
                var r = doc.RootElement;
                // vLLM's LoRAModulePath(**json): a field it does not have is an error, not ignored.
                foreach (var field in r.EnumerateObject())
                    if (field.Name is not ("name" or "path" or "base_model_name"))
                        throw new ArgumentException($"--lora-modules: unknown field '{field.Name}' (the JSON form has name, path and base_model_name)");
                string? Text(string key) => r.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;
                if (Text("name") is not { } moduleName || Text("path") is not { } modulePath)
                    throw new ArgumentException("--lora-modules: the JSON form needs \"name\" and \"path\" strings");
                if (r.TryGetProperty("base_model_name", out var b) && b.ValueKind is not (JsonValueKind.String or JsonValueKind.Null))
                    throw new ArgumentException("--lora-modules: base_model_name must be a string");
                return new LoraModule(moduleName, modulePath, Text("base_model_name"));
            }
        }
        var (name, path) = CommonOptions.ParseLora(value);
        return new LoraModule(name, path);
    }
}
