using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace LoraEngine.Server;

/// <summary>Builds the OpenAI-compatible server: the engine, the static adapters, the API key check and the routes.</summary>
public static class ServerHost
{
    public static WebApplication Build(ServerOptions options, ILoggerFactory? loggerFactory = null)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls($"http://{options.Host}:{options.Port}");
        builder.Logging.ClearProviders();
        builder.Services.ConfigureHttpJsonOptions(o =>
        {
            o.SerializerOptions.PropertyNamingPolicy = System.Text.Json.JsonNamingPolicy.SnakeCaseLower;
            o.SerializerOptions.PropertyNameCaseInsensitive = true;
        });
        if (loggerFactory != null) builder.Services.AddSingleton(loggerFactory);

        var engine = AsyncLlmEngine.FromEngineArgs(options.Engine with { LoggerFactory = loggerFactory ?? options.Engine.LoggerFactory });
        var state = new ServerState(options, engine);
        foreach (var module in options.LoraModules)
        {
            // Static adapters are loaded at start: a bad one stops the server with the loader's message.
            var lora = state.Adapters.Create(module.Name, module.Path);
            engine.Engine.AddLora(lora);
            state.Adapters.Add(lora, module.BaseModelName);
        }
        builder.Services.AddSingleton(state);

        var app = builder.Build();
        app.Lifetime.ApplicationStopped.Register(state.Dispose);
        if (options.ApiKey is { } key)
        {
            app.Use(async (http, next) =>
            {
                if (http.Request.Path.StartsWithSegments("/v1") && http.Request.Headers.Authorization.ToString() != $"Bearer {key}")
                {
                    http.Response.StatusCode = StatusCodes.Status401Unauthorized;
                    await http.Response.WriteAsJsonAsync(new { error = "Unauthorized" });
                    return;
                }
                await next(http);
            });
        }
        app.MapOpenAiApi();
        app.MapAdminApi(options);
        return app;
    }
}
