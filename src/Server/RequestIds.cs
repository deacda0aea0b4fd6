using Microsoft.AspNetCore.Http;

namespace LoraEngine.Server;

/// <summary>
/// vLLM's request ids: the X-Request-Id header, else the body's request_id, else a new one; the id is echoed in the
/// response's X-Request-Id header and names the engine requests (cmpl-{id}-{prompt}, chatcmpl-{id}).
/// </summary>
internal static class RequestIds
{
    public const string Header = "X-Request-Id";

    /// <summary>Echoes the header early, so that refusals carry it too.</summary>
    public static void EchoHeader(HttpContext http)
    {
        if (FromHeader(http) is { } id) http.Response.Headers[Header] = id;
    }

    public static string Resolve(HttpContext http, string? bodyRequestId)
    {
        string id = FromHeader(http) ?? (string.IsNullOrEmpty(bodyRequestId) ? Guid.NewGuid().ToString("N") : bodyRequestId);
        http.Response.Headers[Header] = id;
        return id;
    }

    static string? FromHeader(HttpContext http) => http.Request.Headers[Header].FirstOrDefault() is { Length: > 0 } id ? id : null;
}
