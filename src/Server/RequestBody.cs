using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.AspNetCore.Http;

namespace LoraEngine.Server;

/// <summary>A request the route refuses: the message and the field it names (vLLM's param), answered with a 400.</summary>
internal sealed class BadRequestException(string message, string? param) : Exception(message)
{
    public string? Param { get; } = param;
}

/// <summary>
/// Reads a JSON request body as vLLM's routes do: application/json only (415 otherwise), and a malformed body, a value
/// of the wrong type or a field the server does not honour is a 400 naming the field, never a 500.
/// </summary>
internal static partial class RequestBody
{
    public static async Task<(T? Body, IResult? Error)> ReadAsync<T>(HttpContext http) where T : class, IHasUnrecognizedFields
    {
        if (!http.Request.HasJsonContentType()) return (null, UnsupportedMediaType());
        T? body;
        try
        {
            body = await JsonSerializer.DeserializeAsync<T>(http.Request.Body, Wire.Options, http.RequestAborted);
        }
        catch (JsonException e)
        {
            return (null, Malformed(e));
        }
        if (body is null) return (null, ApiErrors.BadRequest("The request body must be a JSON object."));
        return (body, RequestParameters.Check(body));
    }

    static IResult UnsupportedMediaType() =>
        Results.Json(new ErrorResponse(new ErrorInfo("Unsupported Media Type: Only 'application/json' is allowed", "UnsupportedMediaTypeError", null, 415)),
            Wire.Options, statusCode: StatusCodes.Status415UnsupportedMediaType);

    /// <summary>A wrong type names the field and what it should be; a syntax error says where (no body text is quoted).</summary>
    static IResult Malformed(JsonException e)
    {
        string? field = e.Path is { Length: > 2 } path && path.StartsWith("$.", StringComparison.Ordinal) ? path[2..] : null;
        if (TypeError().Match(e.Message) is { Success: true } m)
            return field is null
                ? ApiErrors.BadRequest("The request body must be a JSON object.")
                : ApiErrors.BadRequest($"'{field}' must be {Describe(m.Groups[1].Value)}.", field);
        return ApiErrors.BadRequest($"The request body is not valid JSON (line {e.LineNumber + 1}, byte {e.BytePositionInLine + 1}).", field);
    }

    /// <summary>"System.Nullable`1[System.Double]" → "a number"; "System.Collections.Generic.List`1[...]" → "a list".</summary>
    static string Describe(string dotnetType)
    {
        const string nullable = "System.Nullable`1[";
        string type = dotnetType.StartsWith(nullable, StringComparison.Ordinal) ? dotnetType[nullable.Length..^1] : dotnetType;
        string name = type.Split('[')[0];
        return name[(name.LastIndexOf('.') + 1)..].Split('`')[0] switch
        {
            "Int32" or "Int64" => "an integer",
            "Double" or "Single" => "a number",
            "Boolean" => "a boolean",
            "String" => "a string",
            "List" => "a list",
            _ => "an object",
        };
    }

    [GeneratedRegex(@"^The JSON value could not be converted to ([^ ]+?)\. Path")]
    private static partial Regex TypeError();
}
