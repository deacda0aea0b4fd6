using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;

namespace LoraEngine.Server;

/// <summary>
/// vLLM's OpenAI-compatible routes: completions and chat completions (both streaming over SSE), models, and the
/// tokenizer routes. Every request field is honoured or refused (<see cref="RequestParameters"/>).
/// </summary>
internal static class OpenAiApi
{
    /// <summary>The /v1 routes into <paramref name="v1"/> (a group at "/v1"), the tokenizer routes into <paramref name="open"/>.</summary>
    public static void MapOpenAiApi(IEndpointRouteBuilder v1, IEndpointRouteBuilder open)
    {
        v1.MapPost("/completions", CompletionsRoute.Handle);
        v1.MapPost("/chat/completions", ChatCompletionsRoute.Handle);
        v1.MapGet("/models", ModelsRoute.List);
        v1.MapGet("/models/{**id}", ModelsRoute.Get); // served names may hold a slash (org/model)
        open.MapPost("/tokenize", TokenizeRoutes.Tokenize);
        open.MapPost("/detokenize", TokenizeRoutes.Detokenize);
    }
}
