using System.Reflection;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Diagnostics.HealthChecks;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;

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
    /// Every route answers errors in OpenAI's JSON shape, refuses bodies past <see cref="ServerOptions.MaxRequestBodyBytes"/>
    /// and new work while the server drains for shutdown (see <see cref="LoraEngineServiceCollectionExtensions"/>).
    /// </summary>
    public static RouteGroupBuilder MapOpenAiEndpoints(this IEndpointRouteBuilder endpoints)
    {
        var group = endpoints.MapGroup("");
        var v1 = group.MapGroup("/v1");
        OpenAiApi.MapOpenAiApi(v1, group);
        group.AddEndpointFilter(EndpointGuard.Filter);
        RequireApiKey(v1, endpoints);
        return group;
    }

    /// <summary>
    /// Operations: <c>/health</c> (the registered health checks, <see cref="LoraEngineHealthCheck"/> among them: "Healthy",
    /// or a 503 with an OpenAI-style error naming why), <c>/version</c>, <c>/metrics</c> (Prometheus text) and, with
    /// <see cref="ServerOptions.AllowRuntimeLoraUpdating"/>, <c>/v1/load_lora_adapter</c> and <c>/v1/unload_lora_adapter</c>
    /// (which need the API key when one is set).
    /// </summary>
    public static RouteGroupBuilder MapLoraAdmin(this IEndpointRouteBuilder endpoints)
    {
        var options = endpoints.ServiceProvider.GetRequiredService<ServerOptions>();
        var group = endpoints.MapGroup("");
        group.MapHealthChecks("/health", new HealthCheckOptions { ResponseWriter = WriteHealth });
        group.MapGet("/version", () => TypedResults.Json(new { version = Version }));
        group.MapGet("/metrics", AdminApi.Metrics);
        group.AddEndpointFilter(EndpointGuard.Filter);
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

    /// <summary>As vLLM's --api-key: the /v1 routes need the key; the tokenizer routes and the operations stay open.</summary>
    static void RequireApiKey(RouteGroupBuilder v1, IEndpointRouteBuilder endpoints)
    {
        if (endpoints.ServiceProvider.GetRequiredService<ServerOptions>().ApiKey is not { } key) return;
        v1.AddEndpointFilter(async (context, next) =>
            context.HttpContext.Request.Headers.Authorization.ToString() == $"Bearer {key}"
                ? await next(context)
                : ApiErrors.Error(StatusCodes.Status401Unauthorized, "AuthenticationError", "Unauthorized"));
    }

    /// <summary>"Healthy" (200), or a 503 whose OpenAI-style error says why (the engine stopped, or the server drains).</summary>
    static Task WriteHealth(HttpContext http, HealthReport report)
    {
        if (report.Status != HealthStatus.Unhealthy)
        {
            http.Response.ContentType = "text/plain";
            return http.Response.WriteAsync(report.Status.ToString());
        }
        string why = report.Entries.Values.FirstOrDefault(e => e.Status == HealthStatus.Unhealthy).Description ?? "Unhealthy";
        return http.Response.WriteAsJsonAsync(ApiErrors.Body(http.Response.StatusCode, "ServiceUnavailableError", why), Wire.Options);
    }

    // Read as the generation routes read theirs: a wrong type names the field, an unknown field is refused.
    static async Task<IResult> LoadLoraAdapter(HttpContext http, ServerState state) => await RequestBody.ReadAsync<LoadLoraRequest>(http) switch
    {
        (_, { } error) => error,
        (var body, _) => AdminApi.LoadLoraAdapter(body!, state),
    };

    static async Task<IResult> UnloadLoraAdapter(HttpContext http, ServerState state) => await RequestBody.ReadAsync<UnloadLoraRequest>(http) switch
    {
        (_, { } error) => error,
        (var body, _) => AdminApi.UnloadLoraAdapter(body!, state),
    };
}
