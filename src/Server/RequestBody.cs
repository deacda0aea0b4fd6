using System.Text.Json;
using System.Text.Unicode;
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
internal static class RequestBody
{
    public static async Task<(T? Body, IResult? Error)> ReadAsync<T>(HttpContext http) where T : class, IHasUnrecognizedFields
    {
        if (!http.Request.HasJsonContentType()) return (null, UnsupportedMediaType());
        using var buffer = new MemoryStream();
        await http.Request.Body.CopyToAsync(buffer, http.RequestAborted);
        var bytes = buffer.GetBuffer().AsSpan(0, (int)buffer.Length);
        // JsonElement fields keep their bytes unchecked: invalid UTF-8 would only fail later, when read.
        if (!Utf8.IsValid(bytes)) return (null, ApiErrors.BadRequest("The request body is not valid UTF-8."));
        if (UnpairedSurrogateAt(bytes) is long at)
            return (null, ApiErrors.BadRequest($"The request body has a string with an unpaired surrogate escape (byte {at + 1}); strings must be valid UTF-16."));
        T? body;
        try
        {
            body = JsonSerializer.Deserialize<T>(bytes, Wire.Options);
        }
        catch (JsonException e)
        {
            return (null, Malformed(e, typeof(T)));
        }
        if (body is null) return (null, ApiErrors.BadRequest("The request body must be a JSON object."));
        return (body, RequestParameters.Check(body));
    }

    /// <summary>
    /// Where a string (or name) unescapes to an unpaired surrogate ("\ud800" alone is valid JSON that .NET cannot read as
    /// a string; in a JsonElement field it would only fail when read, as a 500), or null. A malformed body is left to
    /// the deserializer to report.
    /// </summary>
    static long? UnpairedSurrogateAt(ReadOnlySpan<byte> json)
    {
        var reader = new Utf8JsonReader(json);
        try
        {
            while (reader.Read())
            {
                if (reader.TokenType is not (JsonTokenType.String or JsonTokenType.PropertyName) || !reader.ValueIsEscaped) continue;
                try
                {
                    reader.GetString();
                }
                catch (InvalidOperationException)
                {
                    return reader.TokenStartIndex;
                }
            }
        }
        catch (JsonException)
        {
        }
        return null;
    }

    static IResult UnsupportedMediaType() =>
        Results.Json(new ErrorResponse(new ErrorInfo("Unsupported Media Type: Only 'application/json' is allowed", "UnsupportedMediaTypeError", null, 415)),
            Wire.Options, statusCode: StatusCodes.Status415UnsupportedMediaType);

    /// <summary>A value of the wrong type names the field and what it should be; a syntax error says where (no body text is quoted).</summary>
    static IResult Malformed(JsonException e, Type root)
    {
        string? field = e.Path is { Length: > 2 } path && path.StartsWith("$.", StringComparison.Ordinal) ? path[2..] : null;
        string at = $"line {e.LineNumber + 1}, byte {e.BytePositionInLine + 1}";
        // Valid JSON nested past the reader's limit (a guard against stack exhaustion) is not a syntax error: say which.
        if (e.Message.Contains("maximum configured depth", StringComparison.Ordinal))
            return ApiErrors.BadRequest($"The request body nests JSON more than {Wire.Options.EffectiveMaxDepth()} levels deep ({at}).", field);
        if (!e.Message.StartsWith("The JSON value could not be converted", StringComparison.Ordinal))
            return ApiErrors.BadRequest($"The request body is not valid JSON ({at}).", field);
        if (field is null) return ApiErrors.BadRequest("The request body must be a JSON object.");
        return ApiErrors.BadRequest(TypeAt(root, field) is { } type ? $"'{field}' must be {Describe(type)}." : $"'{field}' has a value of the wrong type.", field);
    }

    /// <summary>The declared type at a JSON path such as "messages[0].role" (snake_case names, list indexes).</summary>
    static Type? TypeAt(Type root, string path)
    {
        Type? type = root;
        foreach (string segment in path.Split('.'))
        {
            string name = segment.Split('[')[0];
            type = type?.GetProperties().FirstOrDefault(p => JsonNamingPolicy.SnakeCaseLower.ConvertName(p.Name) == name)?.PropertyType;
            for (int i = 0; i < segment.Count(c => c == '[') && type != null; i++)
                type = type.IsGenericType ? type.GetGenericArguments()[0] : null;
            if (type is null) return null;
        }
        return type;
    }

    static string Describe(Type type) => (Nullable.GetUnderlyingType(type) ?? type) switch
    {
        var t when t == typeof(int) || t == typeof(long) => "an integer",
        var t when t == typeof(double) || t == typeof(float) => "a number",
        var t when t == typeof(bool) => "a boolean",
        var t when t == typeof(string) => "a string",
        { IsGenericType: true } t when t.GetGenericTypeDefinition() == typeof(List<>) => "a list",
        _ => "an object",
    };
}
