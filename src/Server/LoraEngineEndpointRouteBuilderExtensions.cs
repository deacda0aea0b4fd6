using System.Reflection;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;

namespace LoraEngine.Server;

/// <summary>
/// Mounts the server's routes in an application that called
/// <see cref="LoraEngineServiceCollectionExtensions.AddLoraEngine(IServiceCollection, ServerOptions)"/>. Each returns
/// its route group, so the application places it under a prefix (<c>app.MapGroup("/llm").MapOpenAiEndpoints()</c>)
/// and adds its own conventions (<c>.RequireAuthorization()</c>, rate limiting, CORS). Requests and responses use the
/// OpenAI wire format (snake_case) whatever the application's own JSON options are.
/// </summary>
public static class LoraEngineEndpointRouteBuilderExtensions
{
    /// <summary>
    /// vLLM's OpenAI-compatible routes: <c>/v1/completions</c>, <c>/v1/chat/completions</c>, <c>/v1/models</c>,
    /// <c>/v1/models/{id}</c>, <c>/tokenize</c>, <c>/detokenize</c>. With <see cref="ServerOptions.ApiKey"/> set, the
    /// <c>/v1</c> routes need <c>Authorization: Bearer {ApiKey}</c> (as vLLM's; the tokenizer routes stay open).
    /// </summary>
    public static RouteGroupBuilder MapOpenAiEndpoints(this IEndpointRouteBuilder endpoints)
    {
        var group = endpoints.MapGroup("");
        group.MapOpenAiApi();
        RequireApiKey(group, endpoints);
        return group;
    }

    /// <summary>
    /// Operations: <c>/health</c> (the registered health checks, <see cref="LoraEngineHealthCheck"/> among them),
    /// <c>/version</c>, <c>/metrics</c> (Prometheus text) and, with <see cref="ServerOptions.AllowRuntimeLoraUpdating"/>,
    /// <c>/v1/load_lora_adapter</c> and <c>/v1/unload_lora_adapter</c> (which need the API key when one is set).
    /// </summary>
    public static RouteGroupBuilder MapLoraAdmin(this IEndpointRouteBuilder endpoints)
    {
        var options = endpoints.ServiceProvider.GetRequiredService<ServerOptions>();
        var group = endpoints.MapGroup("");
        group.MapHealthChecks("/health");
        group.MapGet("/version", () => TypedResults.Json(new { version = Version }));
        group.MapGet("/metrics", AdminApi.Metrics);
        if (options.AllowRuntimeLoraUpdating)
        {
            var updates = group.MapGroup("/v1");
            updates.MapPost("/load_lora_adapter", LoadLoraAdapter);
            updates.MapPost("/unload_lora_adapter", UnloadLoraAdapter);
            RequireApiKey(updates, endpoints);
        }
        return group;
    }

    static string Version =>
        typeof(LoraEngineEndpointRouteBuilderExtensions).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "0.0.0";

    static void RequireApiKey(RouteGroupBuilder group, IEndpointRouteBuilder endpoints)
    {
        if (endpoints.ServiceProvider.GetRequiredService<ServerOptions>().ApiKey is not { } key) return;
        // As vLLM's --api-key: the /v1 routes need the key, the tokenizer routes stay open.
        group.AddEndpointFilter(async (context, next) =>
            context.HttpContext.GetEndpoint() is RouteEndpoint { RoutePattern.RawText: { } route } && !route.Contains("/v1/")
            || context.HttpContext.Request.Headers.Authorization.ToString() == $"Bearer {key}"
                ? await next(context)
                : TypedResults.Json(new { error = "Unauthorized" }, statusCode: StatusCodes.Status401Unauthorized));
    }

    static async Task<IResult> LoadLoraAdapter(HttpContext http, ServerState state) => await ReadBody<LoadLoraRequest>(http) switch
    {
        ({ } body, _) => AdminApi.LoadLoraAdapter(body, state),
        (_, var error) => ApiErrors.BadRequest(error!),
    };

    static async Task<IResult> UnloadLoraAdapter(HttpContext http, ServerState state) => await ReadBody<UnloadLoraRequest>(http) switch
    {
        ({ } body, _) => AdminApi.UnloadLoraAdapter(body, state),
        (_, var error) => ApiErrors.BadRequest(error!),
    };

    /// <summary>
    /// The body in the wire format (snake_case), or why it could not be read: read here rather than by parameter
    /// binding, which would follow the application's JSON options.
    /// </summary>
    static async Task<(T? Body, string? Error)> ReadBody<T>(HttpContext http) where T : class
    {
        try
        {
            return await http.Request.ReadFromJsonAsync<T>(Wire.Options, http.RequestAborted) is { } body
                ? (body, null) : (null, "The request body is empty.");
        }
        catch (JsonException e)
        {
            return (null, $"The request body is not valid JSON: {e.Message}");
        }
        catch (InvalidOperationException e) // not application/json
        {
            return (null, e.Message);
        }
    }
}
