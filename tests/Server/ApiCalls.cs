using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Xunit;

namespace LoraEngine.Server.Tests;

/// <summary>Raw HTTP calls against the fixture server: JSON bodies in, status, parsed body and headers out.</summary>
internal sealed class ApiCalls(ServerFixture server)
{
    public sealed record Reply(HttpStatusCode Status, JsonElement Body, HttpResponseMessage Response)
    {
        public JsonElement Choice(int i = 0) =>
            Body.ValueKind == JsonValueKind.Object && Body.TryGetProperty("choices", out var choices) ? choices[i] : throw new InvalidOperationException($"no choices in the reply: {(int)Status} {Body}");

        public string Text(int i = 0) => Choice(i).GetProperty("text").GetString()!;

        public string Content(int i = 0) => Choice(i).GetProperty("message").GetProperty("content").GetString()!;

        public int[] TokenIds(int i = 0) => Choice(i).GetProperty("token_ids").EnumerateArray().Select(t => t.GetInt32()).ToArray();

        public JsonElement Error => Body.GetProperty("error");

        public string? Param => Error.GetProperty("param").GetString();

        public int Usage(string what) => Body.GetProperty("usage").GetProperty(what).GetInt32();
    }

    static CancellationToken Token => TestContext.Current.CancellationToken;

    public async Task<Reply> Post(string route, object body, string? requestId = null)
    {
        using var http = server.Http();
        var message = new HttpRequestMessage(HttpMethod.Post, route) { Content = JsonContent.Create(body) };
        if (requestId != null) message.Headers.Add("X-Request-Id", requestId);
        return await Send(http, message);
    }

    /// <summary>A body as raw text with a content type (malformed JSON, wrong media types).</summary>
    public async Task<Reply> PostRaw(string route, byte[] body, string contentType = "application/json")
    {
        using var http = server.Http();
        var content = new ByteArrayContent(body);
        content.Headers.ContentType = new(contentType);
        return await Send(http, new HttpRequestMessage(HttpMethod.Post, route) { Content = content });
    }

    public Task<Reply> PostRaw(string route, string body, string contentType = "application/json") => PostRaw(route, Encoding.UTF8.GetBytes(body), contentType);

    public async Task<Reply> Get(string route)
    {
        using var http = server.Http();
        return await Send(http, new HttpRequestMessage(HttpMethod.Get, route));
    }

    static async Task<Reply> Send(HttpClient http, HttpRequestMessage message)
    {
        var response = await http.SendAsync(message, Token);
        string text = await response.Content.ReadAsStringAsync(Token);
        var body = text.Length > 0 && text[0] is '{' or '[' ? JsonDocument.Parse(text).RootElement : JsonDocument.Parse(JsonSerializer.Serialize(text)).RootElement;
        return new Reply(response.StatusCode, body, response);
    }

    /// <summary>A streamed request's chunks (each "data:" event before [DONE]); fails unless [DONE] ends the stream.</summary>
    public async Task<List<JsonElement>> Stream(string route, object body)
    {
        using var http = server.Http();
        var message = new HttpRequestMessage(HttpMethod.Post, route) { Content = JsonContent.Create(body) };
        using var response = await http.SendAsync(message, HttpCompletionOption.ResponseHeadersRead, Token);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var chunks = new List<JsonElement>();
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(Token));
        while (await reader.ReadLineAsync(Token) is { } line)
        {
            if (!line.StartsWith("data: ", StringComparison.Ordinal)) continue;
            if (line == "data: [DONE]") return chunks;
            chunks.Add(JsonDocument.Parse(line[6..]).RootElement);
        }
        Assert.Fail("the stream ended without data: [DONE]");
        return chunks;
    }
}
