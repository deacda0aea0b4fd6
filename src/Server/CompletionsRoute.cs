using Microsoft.AspNetCore.Http;

namespace LoraEngine.Server;

/// <summary>POST /v1/completions: one engine request per prompt, all answered in one response or one event stream.</summary>
internal static class CompletionsRoute
{
    public static async Task<IResult> Handle(HttpContext http, ServerState state)
    {
        RequestIds.EchoHeader(http);
        var (request, error) = await RequestBody.ReadAsync<CompletionRequest>(http);
        if (error != null) return error;
        var r = request!;
        if (!state.TryResolve(r.Model, out var lora)) return ApiErrors.ModelNotFound(r.Model);
        GenerationRun run;
        CompletionWriter writer;
        try
        {
            RequestMapping.CheckShared(r);
            var engine = state.Engine.Engine;
            var prompts = PromptInputs.Parse(r.Prompt, engine, r.AddSpecialTokens ?? true)
                .Select(p => PromptInputs.Truncate(p, r.TruncatePromptTokens, r.TruncationSide, engine.Config.MaxModelLen, engine.Tokenizer)).ToList();
            // echo with max_tokens 0 returns the prompt alone: as vLLM, one token is generated and dropped.
            bool promptOnly = r.Echo == true && r.MaxTokens == 0;
            RequestMapping.CheckFits(prompts, r.MaxTokens, "max_tokens", engine.Config.MaxModelLen);
            int? promptLogprobs = r.PromptLogprobs ?? (r.Echo == true ? r.Logprobs : null);
            var sampling = RequestMapping.Sampling(r, promptOnly ? 1 : r.MaxTokens ?? 16, r.Logprobs, promptLogprobs);
            string id = "cmpl-" + RequestIds.Resolve(http, r.RequestId);
            run = GenerationRun.Start(state.Engine, prompts, sampling, lora, prompts.Select((_, i) => $"{id}-{i}").ToList(), r.CacheSalt, http.RequestAborted);
            writer = new CompletionWriter(r, id, r.Model ?? state.ModelId, prompts, promptOnly, new LogprobsFormat(engine.Tokenizer, r.ReturnTokensAsTokenIds == true));
        }
        catch (BadRequestException e)
        {
            return ApiErrors.BadRequest(e.Message, e.Param);
        }
        catch (Exception e) when (e is ArgumentException or Lora.LoraException)
        {
            return ApiErrors.FromException(e);
        }

        if (r.Stream == true) return new SseResult(writer.Stream(run), state);
        await using (run)
        {
            Interlocked.Increment(ref state.RequestsStarted);
            var body = writer.Response(await run.FinalOutputsAsync());
            return new JsonAnswer<CompletionResponse>(body, state);
        }
    }
}

/// <summary>
/// Completion bodies and stream chunks in vLLM's shapes: choice index = prompt × n + sequence index; echo puts each
/// prompt (and its logprobs, the very first null) before the output; each chunk carries its new tokens' logprobs.
/// </summary>
internal sealed class CompletionWriter(CompletionRequest r, string id, string model, IReadOnlyList<EnginePrompt> prompts, bool promptOnly, LogprobsFormat format)
{
    readonly long _created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
    readonly int _n = r.N ?? 1;
    readonly bool _returnTokenIds = r.ReturnTokenIds == true;

    public CompletionResponse Response(RequestOutput[] finals)
    {
        var choices = new List<CompletionChoice>();
        foreach (var (final, p) in finals.Select((f, p) => (f, p)))
            foreach (var c in final.Outputs.OrderBy(c => c.Index))
            {
                var (text, tokens, entries) = Delta(p, final, c, tokensSent: 0, textSent: 0, echo: r.Echo == true);
                choices.Add(new CompletionChoice(choices.Count, text, entries is null ? null : format.Completion(tokens, entries, 0), c.FinishReason)
                {
                    StopReason = c.StopReason,
                    PromptLogprobs = LogprobsFormat.Prompt(final.PromptLogprobs),
                    PromptTokenIds = _returnTokenIds ? final.PromptTokenIds : null,
                    TokenIds = _returnTokenIds ? c.TokenIds : null,
                });
            }
        int promptTokens = finals.Sum(f => f.PromptTokenIds.Count), completionTokens = finals.Sum(f => f.Outputs.Sum(c => c.TokenIds.Count));
        return new CompletionResponse(id, "text_completion", _created, model, choices, new Usage(promptTokens, completionTokens, promptTokens + completionTokens));
    }

    public async IAsyncEnumerable<object> Stream(GenerationRun run)
    {
        await using var _ = run;
        int choices = prompts.Count * _n;
        var tokensSent = new int[choices];
        var textSent = new int[choices];
        var offset = new int[choices];
        var started = new bool[choices];
        var done = new bool[choices];
        var promptTokens = new int[prompts.Count];
        bool includeUsage = r.StreamOptions?.IncludeUsage == true, continuous = includeUsage && r.StreamOptions?.ContinuousUsageStats == true;
        await foreach (var (p, o) in run.ReadAllAsync())
        {
            promptTokens[p] = o.PromptTokenIds.Count;
            foreach (var c in o.Outputs)
            {
                int i = p * _n + c.Index;
                if (done[i]) continue;
                var (text, tokens, entries) = Delta(p, o, c, tokensSent[i], textSent[i], echo: r.Echo == true && !started[i]);
                bool worthSending = text.Length > 0 || c.FinishReason != null || (entries != null && tokens.Count > 0);
                if (!worthSending) continue;
                var newTokens = c.TokenIds.Skip(tokensSent[i]).ToArray();
                var choice = new CompletionChoice(i, text, entries is null ? null : format.Completion(tokens, entries, offset[i]), c.FinishReason)
                {
                    StopReason = c.StopReason,
                    PromptTokenIds = _returnTokenIds && !started[i] ? o.PromptTokenIds : null,
                    TokenIds = _returnTokenIds ? newTokens : null,
                };
                offset[i] += text.Length;
                tokensSent[i] = c.TokenIds.Count;
                textSent[i] = c.Text.Length;
                started[i] = true;
                done[i] = c.FinishReason != null;
                var usage = continuous ? UsageOf(promptTokens[p], tokensSent[i]) : null;
                yield return new CompletionResponse(id, "text_completion", _created, model, [choice], usage);
            }
        }
        if (includeUsage) yield return new CompletionResponse(id, "text_completion", _created, model, [], UsageOf(promptTokens.Sum(), tokensSent.Sum()));
    }

    static Usage UsageOf(int prompt, int completion) => new(prompt, completion, prompt + completion);

    /// <summary>
    /// What a choice adds since <paramref name="tokensSent"/> / <paramref name="textSent"/>: text, the tokens it covers and
    /// their logprob entries (null without logprobs). With <paramref name="echo"/> the prompt comes first.
    /// </summary>
    (string Text, List<int> Tokens, List<IReadOnlyDictionary<int, Logprob>?>? Entries) Delta(int p, RequestOutput o, CompletionOutput c, int tokensSent, int textSent, bool echo)
    {
        string text = "";
        var tokens = new List<int>();
        var entries = r.Logprobs is null ? null : new List<IReadOnlyDictionary<int, Logprob>?>();
        if (echo)
        {
            text = prompts[p].Text;
            tokens.AddRange(o.PromptTokenIds);
            entries?.AddRange(o.PromptLogprobs!);
        }
        if (!promptOnly)
        {
            text += c.Text[textSent..];
            tokens.AddRange(c.TokenIds.Skip(tokensSent));
            entries?.AddRange(c.Logprobs!.Skip(tokensSent));
        }
        return (text, tokens, entries);
    }
}
