using System.Text;
using System.Text.Json;
using LoraEngine.Chat;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;

namespace LoraEngine.Server;

/// <summary>vLLM's OpenAI-compatible routes: completions, chat completions (both streaming over SSE), models.</summary>
public static class OpenAiApi
{
    public static IEndpointRouteBuilder MapOpenAiApi(this IEndpointRouteBuilder app)
    {
        app.MapPost("/v1/completions", Completions);
        app.MapPost("/v1/chat/completions", ChatCompletions);
        app.MapGet("/v1/models", Models);
        return app;
    }

    static long Now => DateTimeOffset.UtcNow.ToUnixTimeSeconds();

    public static IResult Models(ServerState state)
    {
        var cards = new List<ModelCard> { new(state.ModelId, "model", Now, "loraengine", state.Options.Engine.Model, null, state.Engine.Engine.Config.MaxModelLen) };
        foreach (var (lora, parent) in state.Adapters.All)
            cards.Add(new ModelCard(lora.LoraName, "model", Now, "loraengine", lora.LoraPath, parent ?? state.ModelId, null));
        return Results.Json(new ModelList("list", cards), Wire.Options);
    }

    public static async Task<IResult> Completions(HttpContext http, ServerState state)
    {
        var request = await Read<CompletionRequest>(http);
        if (request is null) return ApiErrors.BadRequest("the body must be a JSON completion request");
        if (!state.TryResolve(request.Model, out var lora)) return ApiErrors.ModelNotFound(request.Model);
        string prompt;
        try
        {
            prompt = request.Prompt.ValueKind switch
            {
                JsonValueKind.String => request.Prompt.GetString()!,
                JsonValueKind.Array when request.Prompt.GetArrayLength() == 1 && request.Prompt[0].ValueKind == JsonValueKind.String => request.Prompt[0].GetString()!,
                _ => throw new ArgumentException("prompt must be a string (or a list of one string)", "prompt"),
            };
            var sampling = RequestMapping.Completion(request);
            string id = "cmpl-" + Guid.NewGuid().ToString("N");
            var outputs = state.Engine.GenerateAsync(prompt, sampling, lora, id, http.RequestAborted);
            return request.Stream == true
                ? new SseResult(StreamCompletion(state, id, request, outputs), state)
                : await Collect(state, outputs, final => Results.Json(CompletionBody(state, id, request.Model ?? state.ModelId, final), Wire.Options));
        }
        catch (Exception e) when (e is ArgumentException or Lora.LoraException)
        {
            return ApiErrors.FromException(e);
        }
    }

    public static async Task<IResult> ChatCompletions(HttpContext http, ServerState state)
    {
        var request = await Read<ChatCompletionRequest>(http);
        if (request is null) return ApiErrors.BadRequest("the body must be a JSON chat completion request");
        if (!state.TryResolve(request.Model, out var lora)) return ApiErrors.ModelNotFound(request.Model);
        if (request.Messages is not { Count: > 0 }) return ApiErrors.BadRequest("messages must be a non-empty list", "messages");
        if (state.ChatTemplate is null) return ApiErrors.BadRequest("the model has no chat template; use /v1/completions", "messages");
        try
        {
            var tokenizer = state.Engine.Engine.Tokenizer;
            var turns = request.Messages.Select(m => new ChatTurn(m.Role, RequestMapping.MessageText(m))).ToList();
            string prompt = state.ChatTemplate.Render(turns, addGenerationPrompt: true, tokenizer.BosToken, tokenizer.EosToken);
            state.Engine.Engine.CheckPromptLength(prompt); // before tokenising it
            int promptTokens = tokenizer.Encode(prompt, addSpecialTokens: false).Count;
            var sampling = RequestMapping.Chat(request, state.Engine.Engine.Config.MaxModelLen, promptTokens);
            string id = "chatcmpl-" + Guid.NewGuid().ToString("N");
            var outputs = state.Engine.GenerateAsync(prompt, sampling, lora, id, http.RequestAborted);
            return request.Stream == true
                ? new SseResult(StreamChat(state, id, request, outputs), state)
                : await Collect(state, outputs, final => Results.Json(ChatBody(state, id, request.Model ?? state.ModelId, final, request.TopLogprobs ?? 0), Wire.Options));
        }
        catch (Exception e) when (e is ArgumentException or Lora.LoraException or ChatTemplateException)
        {
            return ApiErrors.FromException(e);
        }
    }

    static async Task<T?> Read<T>(HttpContext http) where T : class
    {
        try
        {
            return await JsonSerializer.DeserializeAsync<T>(http.Request.Body, Wire.Options, http.RequestAborted);
        }
        catch (JsonException)
        {
            return null;
        }
    }

    static async Task<IResult> Collect(ServerState state, IAsyncEnumerable<RequestOutput> outputs, Func<RequestOutput, IResult> respond)
    {
        Interlocked.Increment(ref state.RequestsStarted);
        RequestOutput? final = null;
        await foreach (var o in outputs) final = o;
        Interlocked.Increment(ref state.RequestsSucceeded);
        return respond(final!);
    }

    static Usage UsageOf(RequestOutput o) =>
        new(o.PromptTokenIds.Count, o.Outputs.Sum(c => c.TokenIds.Count), o.PromptTokenIds.Count + o.Outputs.Sum(c => c.TokenIds.Count));

    static CompletionResponse CompletionBody(ServerState state, string id, string model, RequestOutput o) =>
        new(id, "text_completion", Now, model, o.Outputs.Select(c => new CompletionChoice(c.Index, c.Text, Logprobs(state, c), c.FinishReason)).ToList(), UsageOf(o));

    static ChatCompletionResponse ChatBody(ServerState state, string id, string model, RequestOutput o, int topLogprobs) =>
        new(id, "chat.completion", Now, model,
            o.Outputs.Select(c => new ChatChoice(c.Index, new ChatMessageOut("assistant", c.Text), null, ChatLogprobsOf(state, c, topLogprobs), c.FinishReason)).ToList(), UsageOf(o));

    static CompletionLogprobs? Logprobs(ServerState state, CompletionOutput c)
    {
        if (c.Logprobs is null) return null;
        var tokenizer = state.Engine.Engine.Tokenizer;
        var tokens = c.TokenIds.Select(t => tokenizer.Decode([t])).ToList();
        var offsets = new List<int>();
        int offset = 0;
        foreach (var t in tokens)
        {
            offsets.Add(offset);
            offset += t.Length;
        }
        // top_logprobs: the requested top k plus the sampled token, keyed by text as OpenAI's legacy format has it.
        var top = c.Logprobs.Select(e =>
        {
            var d = new Dictionary<string, float>();
            foreach (var kv in e.OrderBy(kv => kv.Value.Rank)) d.TryAdd(tokenizer.Decode([kv.Key]), kv.Value.Value);
            return d;
        }).ToList();
        return new CompletionLogprobs(tokens, c.TokenIds.Select((t, i) => c.Logprobs[i][t].Value).ToList(), top, offsets);
    }

    static ChatLogprobs? ChatLogprobsOf(ServerState state, CompletionOutput c, int topLogprobs)
    {
        if (c.Logprobs is null) return null;
        var tokenizer = state.Engine.Engine.Tokenizer;
        List<int> Bytes(int id) => tokenizer.TokenBytes(id).Select(b => (int)b).ToList();
        return new ChatLogprobs(c.TokenIds.Select((t, i) => new ChatTokenLogprob(tokenizer.Decode([t]), c.Logprobs[i][t].Value, Bytes(t),
            c.Logprobs[i].Where(kv => kv.Value.Rank <= topLogprobs).OrderBy(kv => kv.Value.Rank)
                .Select(kv => new TopLogprob(tokenizer.Decode([kv.Key]), kv.Value.Value, Bytes(kv.Key))).ToList())).ToList());
    }

    static async IAsyncEnumerable<object> StreamCompletion(ServerState state, string id, CompletionRequest request, IAsyncEnumerable<RequestOutput> outputs)
    {
        var sent = new Dictionary<int, int>();
        RequestOutput? last = null;
        string model = request.Model ?? state.ModelId;
        await foreach (var o in outputs)
        {
            last = o;
            foreach (var c in o.Outputs)
            {
                int from = sent.GetValueOrDefault(c.Index);
                if (c.Text.Length == from && c.FinishReason is null) continue;
                sent[c.Index] = c.Text.Length;
                yield return new CompletionResponse(id, "text_completion", Now, model, [new CompletionChoice(c.Index, c.Text[from..], null, c.FinishReason)], null);
            }
        }
        if (last != null && request.StreamOptions?.IncludeUsage == true)
            yield return new CompletionResponse(id, "text_completion", Now, model, [], UsageOf(last));
    }

    static async IAsyncEnumerable<object> StreamChat(ServerState state, string id, ChatCompletionRequest request, IAsyncEnumerable<RequestOutput> outputs)
    {
        string model = request.Model ?? state.ModelId;
        for (int i = 0; i < (request.N ?? 1); i++)
            yield return new ChatCompletionResponse(id, "chat.completion.chunk", Now, model, [new ChatChoice(i, null, new ChatMessageOut("assistant", ""), null, null)], null);
        var sent = new Dictionary<int, int>();
        RequestOutput? last = null;
        await foreach (var o in outputs)
        {
            last = o;
            foreach (var c in o.Outputs)
            {
                int from = sent.GetValueOrDefault(c.Index);
                if (c.Text.Length == from && c.FinishReason is null) continue;
                sent[c.Index] = c.Text.Length;
                yield return new ChatCompletionResponse(id, "chat.completion.chunk", Now, model,
                    [new ChatChoice(c.Index, null, new ChatMessageOut(null, c.Text[from..]), null, c.FinishReason)], null);
            }
        }
        if (last != null && request.StreamOptions?.IncludeUsage == true)
            yield return new ChatCompletionResponse(id, "chat.completion.chunk", Now, model, [], UsageOf(last));
    }

    /// <summary>Server-sent events: one "data: {json}" per chunk, then "data: [DONE]". A client that goes away aborts the request.</summary>
    sealed class SseResult(IAsyncEnumerable<object> chunks, ServerState state) : IResult
    {
        public async Task ExecuteAsync(HttpContext http)
        {
            http.Response.ContentType = "text/event-stream";
            http.Response.Headers.CacheControl = "no-cache";
            Interlocked.Increment(ref state.RequestsStarted);
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
                Interlocked.Increment(ref state.RequestsAborted); // the stream's enumerator aborted the engine request
            }
        }
    }
}
