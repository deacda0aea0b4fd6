using Microsoft.AspNetCore.Http;

namespace LoraEngine.Server;

/// <summary>OpenAI-style error bodies with vLLM's types and texts.</summary>
internal static class ApiErrors
{
    public static IResult BadRequest(string message, string? param = null) =>
        Results.Json(new ErrorResponse(new ErrorInfo(message, "BadRequestError", param, 400)), Wire.Options, statusCode: 400);

    public static IResult NotFound(string message, string? param = null) =>
        Results.Json(new ErrorResponse(new ErrorInfo(message, "NotFoundError", param, 404)), Wire.Options, statusCode: 404);

    public static IResult ModelNotFound(string? model) => NotFound($"The model `{model}` does not exist.", "model");

    /// <summary>Maps an engine exception from a bad request to a 400 naming the parameter (snake_case, as the wire has it).</summary>
    public static IResult FromException(Exception e) => e switch
    {
        // ArgumentException.Message ends with " (Parameter 'X')": the param field carries that on the wire.
        ArgumentException a => BadRequest(a.ParamName is { } p ? a.Message.Replace($" (Parameter '{p}')", "") : a.Message, a.ParamName is { } q ? SnakeCase(q) : null),
        Lora.LoraException l when l.Message.Contains("No adapter found") => NotFound(l.Message),
        Lora.LoraException l => BadRequest(l.Message),
        Chat.ChatTemplateException c => BadRequest(c.Message, "messages"),
        _ => throw e,
    };

    public static string SnakeCase(string name) => System.Text.Json.JsonNamingPolicy.SnakeCaseLower.ConvertName(name);
}
