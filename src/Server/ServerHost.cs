using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace LoraEngine.Server;

/// <summary>
/// Builds the OpenAI-compatible server: the engine, the static adapters, the JSON error net, the API key check, the
/// request limits, the routes, and the graceful shutdown (on SIGTERM: stop accepting, drain, abort what is left).
/// </summary>
public static class ServerHost
{
    public static WebApplication Build(ServerOptions options, ILoggerFactory? loggerFactory = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls($"http://{options.Host}:{options.Port}");
        builder.WebHost.ConfigureKestrel(k => k.Limits.MaxRequestBodySize = options.MaxRequestBodyBytes);
        // Kestrel waits this long for requests in flight when it stops: the drain, then time to tell the rest.
        builder.Services.Configure<HostOptions>(h => h.ShutdownTimeout = options.DrainTimeout + TimeSpan.FromSeconds(10));
        builder.Logging.ClearProviders();
        builder.Services.ConfigureHttpJsonOptions(o =>
        {
            o.SerializerOptions.PropertyNamingPolicy = System.Text.Json.JsonNamingPolicy.SnakeCaseLower;
            o.SerializerOptions.PropertyNameCaseInsensitive = true;
        });
        if (loggerFactory != null) builder.Services.AddSingleton(loggerFactory);

        var engine = AsyncLlmEngine.FromEngineArgs(options.Engine with { LoggerFactory = loggerFactory ?? options.Engine.LoggerFactory });
        var state = new ServerState(options, engine, (loggerFactory ?? options.Engine.LoggerFactory)?.CreateLogger("LoraEngine.Server"));
        try
        {
            foreach (var module in options.LoraModules)
            {
                // Static adapters are loaded at start: a bad one stops the server with the loader's message.
                var lora = state.Adapters.Create(module.Name, module.Path);
                engine.Engine.AddLora(lora);
                state.Adapters.Add(lora, module.BaseModelName);
            }
        }
        catch
        {
            engine.Dispose();
            throw;
        }
        builder.Services.AddSingleton(state);

        var app = builder.Build();
        app.Lifetime.ApplicationStopping.Register(() => state.BeginDrain());
        app.Lifetime.ApplicationStopped.Register(state.Dispose);
        app.UseJsonErrors();
        if (options.ApiKey is { } key)
        {
            app.Use(async (http, next) =>
            {
                if (http.Request.Path.StartsWithSegments("/v1") && http.Request.Headers.Authorization.ToString() != $"Bearer {key}")
                {
                    await ApiErrors.Error(StatusCodes.Status401Unauthorized, "AuthenticationError", "Unauthorized").ExecuteAsync(http);
                    return;
                }
                await next(http);
            });
        }
        app.UseRequestLimits();
        app.MapOpenAiApi();
        app.MapAdminApi(options);
        return app;
    }
}
