using Microsoft.AspNetCore.Http;

namespace LoraEngine.Server;

/// <summary>OpenAI-style error bodies with vLLM's types and texts.</summary>
internal static class ApiErrors
{
    public static IResult Error(int status, string type, string message, string? param = null) =>
        Results.Json(Body(status, type, message, param), Wire.Options, statusCode: status);

    public static ErrorResponse Body(int status, string type, string message, string? param = null) =>
        new(new ErrorInfo(message, type, param, status));

    public static IResult BadRequest(string message, string? param = null) => Error(400, "BadRequestError", message, param);

    public static IResult NotFound(string message, string? param = null) => Error(404, "NotFoundError", message, param);

    public static IResult ModelNotFound(string? model) => NotFound($"The model `{model}` does not exist.", "model");

    /// <summary>A 500 that says nothing of the server's insides (the log has the exception).</summary>
    public static ErrorResponse InternalServerError { get; } = Body(500, "InternalServerError", "Internal server error: the server log has the details.");

    /// <summary>Maps an exception from a bad request (its parameters, its adapter, its messages) to a 4xx; rethrows any other.</summary>
    public static IResult FromException(Exception e) =>
        e is ArgumentException or Lora.LoraException or Chat.ChatTemplateException ? Result(ForException(e)) : throw e;

    public static IResult Result(ErrorResponse body) => Results.Json(body, Wire.Options, statusCode: body.Error.Code);

    /// <summary>
    /// The error for an exception: the request's own faults as 4xx naming the parameter (snake_case, as the wire has
    /// it), an engine failure in the engine's words (500 for one request, 503 once the engine stopped or the server is
    /// shutting down), anything else a bare <see cref="InternalServerError"/>.
    /// </summary>
    public static ErrorResponse ForException(Exception e) => e switch
    {
        BadHttpRequestException b => Body(b.StatusCode, "BadRequestError", b.Message),
        // ArgumentException.Message ends with " (Parameter 'X')": the param field carries that on the wire.
        ArgumentException a => Body(400, "BadRequestError", a.ParamName is { } p ? a.Message.Replace($" (Parameter '{p}')", "") : a.Message, a.ParamName is { } q ? SnakeCase(q) : null),
        Lora.LoraException l when l.Message.Contains("No adapter found") => Body(404, "NotFoundError", l.Message),
        Lora.LoraException l => Body(400, "BadRequestError", l.Message),
        Chat.ChatTemplateException c => Body(400, "BadRequestError", c.Message, "messages"),
        EngineGenerateException g => Body(500, "InternalServerError", g.Message),
        EngineDeadException d => Body(503, "ServiceUnavailableError", d.Message),
        _ => InternalServerError,
    };

    /// <summary>OpenAI's error type for a status code that came without a body (unknown route, wrong method, ...).</summary>
    public static string TypeOf(int status) => status switch
    {
        401 => "AuthenticationError",
        404 => "NotFoundError",
        405 => "MethodNotAllowedError",
        503 => "ServiceUnavailableError",
        >= 500 => "InternalServerError",
        _ => "BadRequestError",
    };

    public static string SnakeCase(string name) => System.Text.Json.JsonNamingPolicy.SnakeCaseLower.ConvertName(name);
}
