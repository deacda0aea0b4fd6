using Microsoft.AspNetCore.Http;

namespace LoraEngine.Server;

/// <summary>
/// A whole (non-streaming) answer, counted as succeeded once its body is written. A client gone before then is counted
/// as aborted by <see cref="EndpointGuard"/> instead, so each request is counted once either way.
/// </summary>
internal sealed class JsonAnswer<T>(T body, ServerState state) : IResult
{
    public async Task ExecuteAsync(HttpContext http)
    {
        await Results.Json(body, Wire.Options).ExecuteAsync(http);
        Interlocked.Increment(ref state.RequestsSucceeded);
    }
}
