using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.WebUtilities;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace LoraEngine.Server;

/// <summary>
/// The server's safety net: every route ends in an OpenAI-style JSON error. An exception no route handled becomes
/// <see cref="ApiErrors.ForException"/>'s error (a plain 500 says nothing internal; the log has the exception); once
/// a stream has started, it becomes a last SSE event <c>data: {"error": ...}</c> followed by <c>data: [DONE]</c>;
/// a status without a body (unknown route, wrong method) gets a JSON body too. A client that goes away before its
/// answer is counted as aborted; a request that ends in a 5xx or an error event is counted as failed.
/// </summary>
internal static class ErrorHandling
{
    public static WebApplication UseJsonErrors(this WebApplication app)
    {
        app.Use(Handle);
        app.UseStatusCodePages(context =>
        {
            int status = context.HttpContext.Response.StatusCode;
            string message = ReasonPhrases.GetReasonPhrase(status) is { Length: > 0 } phrase ? phrase : $"HTTP {status}";
            if (status == 404) message = $"No route {context.HttpContext.Request.Method} {context.HttpContext.Request.Path}.";
            return context.HttpContext.Response.WriteAsJsonAsync(ApiErrors.Body(status, ApiErrors.TypeOf(status), message), Wire.Options);
        });
        return app;
    }

    static async Task Handle(HttpContext http, RequestDelegate next)
    {
        var state = http.RequestServices.GetRequiredService<ServerState>();
        try
        {
            await next(http);
        }
        catch (OperationCanceledException) when (http.RequestAborted.IsCancellationRequested)
        {
            Interlocked.Increment(ref state.RequestsAborted); // the client went away (a streaming one is counted by its stream)
        }
        catch (Exception e)
        {
            var error = ApiErrors.ForException(e);
            if (error.Error.Code >= 500) Interlocked.Increment(ref state.RequestsFailed);
            if (ReferenceEquals(error, ApiErrors.InternalServerError))
                state.Logger.LogError(e, "{Method} {Path} failed", http.Request.Method, http.Request.Path);
            else if (error.Error.Code >= 500)
                state.Logger.LogWarning("{Method} {Path}: {Message}", http.Request.Method, http.Request.Path, error.Error.Message);
            await Answer(http, error);
        }
    }

    static async Task Answer(HttpContext http, ErrorResponse error)
    {
        if (!http.Response.HasStarted)
        {
            http.Response.Clear();
            http.Response.StatusCode = error.Error.Code;
            await http.Response.WriteAsJsonAsync(error, Wire.Options);
            return;
        }
        if (http.Response.ContentType?.StartsWith("text/event-stream", StringComparison.Ordinal) != true)
        {
            http.Abort(); // a body is half written: all that is left is to cut it
            return;
        }
        try
        {
            await http.Response.WriteAsync($"data: {JsonSerializer.Serialize(error, Wire.Options)}\n\ndata: [DONE]\n\n", Encoding.UTF8, http.RequestAborted);
        }
        catch (Exception) when (http.RequestAborted.IsCancellationRequested)
        {
            // The client left while we told it.
        }
    }
}
