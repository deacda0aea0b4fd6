using LoraEngine.Chat;
using Microsoft.AspNetCore.Http;

namespace LoraEngine.Server;

/// <summary>POST /v1/chat/completions: messages through the model's chat template, then one engine request.</summary>
internal static class ChatCompletionsRoute
{
    public static async Task<IResult> Handle(HttpContext http, ServerState state)
    {
        RequestIds.EchoHeader(http);
        var (request, error) = await RequestBody.ReadAsync<ChatCompletionRequest>(http);
        if (error != null) return error;
        var r = request!;
        if (!state.TryResolve(r.Model, out var lora)) return ApiErrors.ModelNotFound(r.Model);
        if (state.ChatTemplate is null) return ApiErrors.BadRequest("the model has no chat template; use /v1/completions", "messages");
        GenerationRun run;
        ChatWriter writer;
        try
        {
            RequestMapping.CheckShared(r);
            if (r.TopLogprobs is > 0 && r.Logprobs != true)
                throw new BadRequestException("when using `top_logprobs`, `logprobs` must be set to true.", "top_logprobs");
            var engine = state.Engine.Engine;
            var turns = ChatInputs.Turns(r.Messages);
            string text = ChatInputs.Render(state.ChatTemplate, engine.Tokenizer, r, turns);
            var prompt = PromptInputs.Truncate(PromptInputs.FromText(text, engine, r.AddSpecialTokens ?? false),
                r.TruncatePromptTokens, r.TruncationSide, engine.Config.MaxModelLen, engine.Tokenizer);
            RequestMapping.CheckFits([prompt], r.MaxCompletionTokens ?? r.MaxTokens, r.MaxCompletionTokens != null ? "max_completion_tokens" : "max_tokens", engine.Config.MaxModelLen);
            // Without a limit a chat may use the rest of the context, as in vLLM.
            int maxTokens = r.MaxCompletionTokens ?? r.MaxTokens ?? Math.Max(1, engine.Config.MaxModelLen - prompt.TokenIds.Count);
            var sampling = RequestMapping.Sampling(r, maxTokens, r.Logprobs == true ? r.TopLogprobs ?? 0 : null, r.PromptLogprobs);
            string id = "chatcmpl-" + RequestIds.Resolve(http, r.RequestId);
            run = GenerationRun.Start(state.Engine, [prompt], sampling, lora, [id], r.CacheSalt, http.RequestAborted);
            writer = new ChatWriter(r, id, r.Model ?? state.ModelId, turns, new LogprobsFormat(engine.Tokenizer, r.ReturnTokensAsTokenIds == true));
        }
        catch (BadRequestException e)
        {
            return ApiErrors.BadRequest(e.Message, e.Param);
        }
        catch (ArgumentException e) when (ChatField(e.ParamName, r) is { } field)
        {
            string message = ApiErrors.ForException(e).Error.Message.Replace(ApiErrors.SnakeCase(e.ParamName!), field);
            return ApiErrors.BadRequest(message, field);
        }
        catch (Exception e) when (e is ArgumentException or Lora.LoraException or ChatTemplateException)
        {
            return ApiErrors.FromException(e);
        }

        if (r.Stream == true) return new SseResult(writer.Stream(run), state);
        await using (run)
        {
            Interlocked.Increment(ref state.RequestsStarted);
            var body = writer.Response((await run.FinalOutputsAsync())[0]);
            return new JsonAnswer<ChatCompletionResponse>(body, state);
        }
    }

    /// <summary>The chat field a sampling parameter came from where its name differs from the engine's: top_logprobs, max_completion_tokens.</summary>
    static string? ChatField(string? param, ChatCompletionRequest r) => param switch
    {
        nameof(SamplingParams.Logprobs) => "top_logprobs",
        nameof(SamplingParams.MaxTokens) when r.MaxCompletionTokens != null => "max_completion_tokens",
        _ => null,
    };
}

/// <summary>
/// Chat bodies and chunks in vLLM's shapes. The reply's role is "assistant", or the last message's role without
/// add_generation_prompt; echo puts the last message's content first when its role is the reply's (vLLM's chat echo).
/// </summary>
internal sealed class ChatWriter(ChatCompletionRequest r, string id, string model, IReadOnlyList<ChatTurn> turns, LogprobsFormat format)
{
    readonly long _created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
    readonly int _n = r.N ?? 1;
    readonly string _role = r.AddGenerationPrompt ?? true ? "assistant" : turns[^1].Role;
    readonly bool _returnTokenIds = r.ReturnTokenIds == true;

    string Echoed => r.Echo == true && turns[^1].Role == _role ? turns[^1].Content : "";

    ChatLogprobs? Logprobs(CompletionOutput c, int from) =>
        c.Logprobs is null ? null : format.Chat(c.TokenIds.Skip(from).ToArray(), c.Logprobs.Skip(from).ToArray(), r.TopLogprobs ?? 0);

    public ChatCompletionResponse Response(RequestOutput final)
    {
        var choices = final.Outputs.OrderBy(c => c.Index).Select(c =>
            new ChatChoice(c.Index, new ChatMessageOut(_role, Echoed + c.Text), null, Logprobs(c, 0), c.FinishReason)
            {
                StopReason = c.StopReason,
                TokenIds = _returnTokenIds ? c.TokenIds : null,
            }).ToList();
        int promptTokens = final.PromptTokenIds.Count, completionTokens = final.Outputs.Sum(c => c.TokenIds.Count);
        return new ChatCompletionResponse(id, "chat.completion", _created, model, choices, new Usage(promptTokens, completionTokens, promptTokens + completionTokens))
        {
            PromptLogprobs = LogprobsFormat.Prompt(final.PromptLogprobs),
            PromptTokenIds = _returnTokenIds ? final.PromptTokenIds : null,
        };
    }

    public async IAsyncEnumerable<object> Stream(GenerationRun run)
    {
        await using var _ = run;
        var tokensSent = new int[_n];
        var textSent = new int[_n];
        var done = new bool[_n];
        int promptTokens = 0;
        bool includeUsage = r.StreamOptions?.IncludeUsage == true, continuous = includeUsage && r.StreamOptions?.ContinuousUsageStats == true;
        Usage? UsageNow(int choice) => continuous ? new Usage(promptTokens, tokensSent[choice], promptTokens + tokensSent[choice]) : null;
        ChatCompletionResponse Chunk(ChatChoice choice) => new(id, "chat.completion.chunk", _created, model, [choice], UsageNow(choice.Index));

        bool first = true;
        await foreach (var (_, o) in run.ReadAllAsync())
        {
            promptTokens = o.PromptTokenIds.Count;
            if (first)
            {
                // vLLM opens every choice with its role, then the echoed content.
                first = false;
                for (int i = 0; i < _n; i++)
                    yield return Chunk(new ChatChoice(i, null, new ChatMessageOut(_role, ""), null, null)) with
                    {
                        PromptTokenIds = _returnTokenIds && i == 0 ? o.PromptTokenIds : null,
                    };
                if (Echoed.Length > 0)
                    for (int i = 0; i < _n; i++) yield return Chunk(new ChatChoice(i, null, new ChatMessageOut(null, Echoed), null, null));
            }
            foreach (var c in o.Outputs)
            {
                int i = c.Index;
                if (done[i]) continue;
                string text = c.Text[textSent[i]..];
                var logprobs = Logprobs(c, tokensSent[i]);
                bool worthSending = text.Length > 0 || c.FinishReason != null || logprobs is { Content.Count: > 0 };
                if (!worthSending) continue;
                var newTokens = c.TokenIds.Skip(tokensSent[i]).ToArray();
                tokensSent[i] = c.TokenIds.Count;
                textSent[i] = c.Text.Length;
                done[i] = c.FinishReason != null;
                yield return Chunk(new ChatChoice(i, null, new ChatMessageOut(null, text), logprobs, c.FinishReason)
                {
                    StopReason = c.StopReason,
                    TokenIds = _returnTokenIds ? newTokens : null,
                });
            }
        }
        if (includeUsage)
            yield return new ChatCompletionResponse(id, "chat.completion.chunk", _created, model, [], new Usage(promptTokens, tokensSent.Sum(), promptTokens + tokensSent.Sum()));
    }
}
