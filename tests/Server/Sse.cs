using System.Net;
using System.Net.Http.Json;
using System.Text.Json;

namespace LoraEngine.Server.Tests;

/// <summary>A plain SSE client: posts a streaming request and collects its "data:" payloads.</summary>
internal static class Sse
{
    public sealed record Result(HttpStatusCode Status, List<string> Events, string Body)
    {
        public bool Done => Events.LastOrDefault() == "[DONE]";

        /// <summary>The "error" object of an error event, if the stream carried one.</summary>
        public JsonElement? Error => Events.Where(e => e.StartsWith('{')).Select(e => JsonDocument.Parse(e).RootElement)
            .Where(e => e.TryGetProperty("error", out _)).Select(e => (JsonElement?)e.GetProperty("error")).FirstOrDefault();

        /// <summary>The text of choice 0 (completions' text or chat's delta content), concatenated.</summary>
        public string Text => string.Concat(Events.Where(e => e.StartsWith('{')).Select(e => JsonDocument.Parse(e).RootElement)
            .Where(e => e.TryGetProperty("choices", out var c) && c.GetArrayLength() > 0)
            .Select(e => e.GetProperty("choices")[0])
            .Select(c => c.TryGetProperty("text", out var t) ? t.GetString()
                : c.GetProperty("delta").TryGetProperty("content", out var d) ? d.GetString() : ""));
    }

    public static async Task<Result> Post(HttpClient http, string route, object body, CancellationToken ct)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, route) { Content = JsonContent.Create(body) };
        using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, ct);
        var events = new List<string>();
        if (response.Content.Headers.ContentType?.MediaType != "text/event-stream")
            return new Result(response.StatusCode, events, await response.Content.ReadAsStringAsync(ct));
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(ct));
        while (await reader.ReadLineAsync(ct) is { } line)
            if (line.StartsWith("data: ", StringComparison.Ordinal)) events.Add(line[6..]);
        return new Result(response.StatusCode, events, "");
    }
}
