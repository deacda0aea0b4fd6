using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace LoraEngine.Server;

/// <summary>
/// The endpoint filter every LoraEngine route runs behind, wherever an application mounts it, so the routes behave the
/// same inside an application and in <c>loraengine serve</c>:
/// <list type="bullet">
/// <item>while the server drains for shutdown a new POST gets a 503;</item>
/// <item>a POST body larger than <see cref="ServerOptions.MaxRequestBodyBytes"/> is refused with a 413 before anything
/// parses it (by its length, or by the server cutting the read once past the limit);</item>
/// <item>an exception the route did not handle, or one thrown while its result is written (a stream), becomes an
/// OpenAI-style error: <see cref="ApiErrors.ForException"/>'s JSON body while nothing was sent (a plain 500 says nothing
/// internal; the log has the exception), else a last SSE event <c>data: {"error": ...}</c> and <c>data: [DONE]</c>;</item>
/// <item>a client that goes away before its answer is counted as aborted; an answer that ends in a 5xx as failed.</item>
/// </list>
/// </summary>
internal static class EndpointGuard
{
    public static async ValueTask<object?> Filter(EndpointFilterInvocationContext context, EndpointFilterDelegate next)
    {
        var http = context.HttpContext;
        var state = http.RequestServices.GetRequiredService<ServerState>();
        try
        {
            if (HttpMethods.IsPost(http.Request.Method) && CheckPost(http, state) is { } refusal) return refusal;
            var result = await next(context);
            return result is IResult r ? new Guarded(r, state) : result;
        }
        catch (Exception e) when (!http.Response.HasStarted)
        {
            return Fail(http, state, e) is { } error ? ApiErrors.Result(error) : Results.Empty;
        }
    }

    /// <summary>The route's result, written with the same net: a failure mid-stream ends the stream with an error event.</summary>
    sealed class Guarded(IResult inner, ServerState state) : IResult
    {
        public async Task ExecuteAsync(HttpContext http)
        {
            try
            {
                await inner.ExecuteAsync(http);
            }
            catch (Exception e)
            {
                if (Fail(http, state, e) is { } error) await Answer(http, error);
            }
        }
    }

    /// <summary>Counts and logs a failure; the error to send, or null when the client is gone.</summary>
    static ErrorResponse? Fail(HttpContext http, ServerState state, Exception e)
    {
        if (e is OperationCanceledException && http.RequestAborted.IsCancellationRequested)
        {
            Interlocked.Increment(ref state.RequestsAborted); // the client went away (a streaming one is counted by its stream)
            return null;
        }
        var error = ApiErrors.ForException(e);
        if (error.Error.Code >= 500) Interlocked.Increment(ref state.RequestsFailed);
        if (ReferenceEquals(error, ApiErrors.InternalServerError))
            state.Logger.LogError(e, "{Method} {Path} failed", http.Request.Method, http.Request.Path);
        else if (error.Error.Code >= 500)
            state.Logger.LogWarning("{Method} {Path}: {Message}", http.Request.Method, http.Request.Path, error.Error.Message);
        return error;
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

    /// <summary>Null when the request may go on to the route; else the refusal.</summary>
    static IResult? CheckPost(HttpContext http, ServerState state)
    {
        if (state.Draining) return ApiErrors.Error(503, "ServiceUnavailableError", ServerState.ShuttingDown);
        long limit = state.Options.MaxRequestBodyBytes;
        if (http.Request.ContentLength > limit) return TooLarge(limit);
        // A body without a length (chunked) is cut off by the server once past the limit: the route's read throws a 413.
        if (http.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } size && (size.MaxRequestBodySize ?? long.MaxValue) > limit)
            size.MaxRequestBodySize = limit;
        return null;
    }

    static IResult TooLarge(long limit) =>
        ApiErrors.Error(StatusCodes.Status413PayloadTooLarge, "BadRequestError", $"The request body is larger than the server's limit of {limit} bytes.");
}
