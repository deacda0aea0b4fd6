using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;

namespace LoraEngine.Server;

/// <summary>
/// vLLM's OpenAI-compatible routes: completions and chat completions (both streaming over SSE), models, and the
/// tokenizer routes. Every request field is honoured or refused (<see cref="RequestParameters"/>).
/// </summary>
public static class OpenAiApi
{
    public static IEndpointRouteBuilder MapOpenAiApi(this IEndpointRouteBuilder app)
    {
        app.MapPost("/v1/completions", CompletionsRoute.Handle);
        app.MapPost("/v1/chat/completions", ChatCompletionsRoute.Handle);
        app.MapGet("/v1/models", ModelsRoute.List);
        app.MapGet("/v1/models/{**id}", ModelsRoute.Get); // served names may hold a slash (org/model)
        app.MapPost("/tokenize", TokenizeRoutes.Tokenize);
        app.MapPost("/detokenize", TokenizeRoutes.Detokenize);
        return app;
    }

    /// <summary>The model list (kept public for callers of the earlier handler).</summary>
    public static IResult Models(ServerState state) => ModelsRoute.List(state);

    public static Task<IResult> Completions(HttpContext http, ServerState state) => CompletionsRoute.Handle(http, state);

    public static Task<IResult> ChatCompletions(HttpContext http, ServerState state) => ChatCompletionsRoute.Handle(http, state);
}
