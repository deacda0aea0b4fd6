using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Http;

namespace LoraEngine.Server;

/// <summary>Server-sent events: one "data: {json}" per chunk, then "data: [DONE]". A client that goes away aborts the request.</summary>
internal sealed class SseResult(IAsyncEnumerable<object> chunks, ServerState state) : IResult
{
    public async Task ExecuteAsync(HttpContext http)
    {
        http.Response.ContentType = "text/event-stream";
        http.Response.Headers.CacheControl = "no-cache";
        Interlocked.Increment(ref state.RequestsStarted);
        // The requests were checked and queued before this result was made: from here on the answer is a 200 stream,
        // and a failure of the request becomes its last event (ErrorHandling), as vLLM does.
        await http.Response.StartAsync(http.RequestAborted);
        try
        {
            await foreach (var chunk in chunks.WithCancellation(http.RequestAborted))
            {
                await http.Response.WriteAsync("data: " + JsonSerializer.Serialize(chunk, chunk.GetType(), Wire.Options) + "\n\n", Encoding.UTF8, http.RequestAborted);
                await http.Response.Body.FlushAsync(http.RequestAborted);
            }
            await http.Response.WriteAsync("data: [DONE]\n\n", http.RequestAborted);
            Interlocked.Increment(ref state.RequestsSucceeded);
        }
        catch (OperationCanceledException) when (http.RequestAborted.IsCancellationRequested)
        {
            Interlocked.Increment(ref state.RequestsAborted); // disposing the chunks aborted the engine requests
        }
    }
}
