using System.Text.Unicode;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;

namespace LoraEngine.Server;

/// <summary>
/// Checks a request before any route sees it. A body is read once, within <see cref="ServerOptions.MaxRequestBodyBytes"/>
/// (Kestrel refuses past it, answered as a 413), and refused with a 400 unless it is valid UTF-8 (JSON must be); the
/// routes read the checked copy. While the server drains for shutdown, a new POST gets a 503.
/// </summary>
internal static class RequestLimits
{
    public static WebApplication UseRequestLimits(this WebApplication app)
    {
        app.Use(Check);
        return app;
    }

    static async Task Check(HttpContext http, RequestDelegate next)
    {
        if (!HttpMethods.IsPost(http.Request.Method))
        {
            await next(http);
            return;
        }
        var state = http.RequestServices.GetRequiredService<ServerState>();
        if (state.Draining)
        {
            await ApiErrors.Error(503, "ServiceUnavailableError", ServerState.ShuttingDown).ExecuteAsync(http);
            return;
        }
        var body = new MemoryStream(http.Request.ContentLength is long n && n <= state.Options.MaxRequestBodyBytes ? (int)n : 0);
        http.Response.RegisterForDispose(body);
        await http.Request.Body.CopyToAsync(body, http.RequestAborted);
        if (!Utf8.IsValid(body.GetBuffer().AsSpan(0, (int)body.Length)))
        {
            await ApiErrors.BadRequest("The request body is not valid UTF-8.").ExecuteAsync(http);
            return;
        }
        body.Position = 0;
        http.Request.Body = body;
        await next(http);
    }
}
