using System.Text.Json;
using System.Text.Json.Serialization;

namespace LoraEngine.Server;

/// <summary>
/// POST /v1/completions. Prompt and stop take the shapes OpenAI allows (read as JsonElement, checked by the route);
/// the members after the primary constructor are vLLM's extra parameters. Fields no member takes land in
/// <see cref="Unrecognized"/> and are refused unless harmless (<see cref="RequestParameters"/>).
/// </summary>
/// <param name="Model">The served model name for the base model, or an adapter's name; null: the base model. An unknown name is a 404.</param>
/// <param name="Prompt">A string, a list of strings, a list of token ids or a list of token-id lists: one engine request per
/// prompt, each giving <paramref name="N"/> choices. Text gets BOS (<see cref="AddSpecialTokens"/>); token ids are taken as they are.</param>
/// <param name="MaxTokens">max_tokens: the most tokens to generate per choice; default 16. 0 is allowed only with
/// <see cref="Echo"/>, which then returns the prompt alone.</param>
/// <param name="Temperature">Sampling temperature, ≥ 0; 0 is greedy. Default 1.</param>
/// <param name="TopP">top_p: sample from the smallest set of tokens whose probabilities add up to this, in (0, 1]. Default 1 (off).</param>
/// <param name="TopK">top_k: sample from the k most likely tokens; 0 or −1: off (the default).</param>
/// <param name="MinP">min_p: drop tokens less likely than this fraction of the most likely one's probability, in [0, 1]. Default 0 (off).</param>
/// <param name="N">How many choices to generate per prompt; default 1 (the server's --max-n caps it).</param>
/// <param name="Stream">true: answer with server-sent events, each chunk a <see cref="CompletionResponse"/> with the text new
/// since the last, then <c>data: [DONE]</c>.</param>
/// <param name="Stop">A string or a list of strings that end a choice when generated; the stop string is left out of the
/// text unless <see cref="IncludeStopStrInOutput"/>.</param>
/// <param name="Seed">Per-request seed: the same seed gives the same tokens whatever else is in the batch.</param>
/// <param name="Logprobs">OpenAI's legacy logprobs: return the log-probabilities of this many most likely tokens at each
/// position, plus the sampled one's; −1: the whole vocabulary. More than the engine's MaxLogprobs (default 20) is a 400.</param>
/// <param name="PresencePenalty">presence_penalty, in [−2, 2]: subtracted once from the logit of every token already generated. Default 0.</param>
/// <param name="FrequencyPenalty">frequency_penalty, in [−2, 2]: subtracted from a token's logit once per time it was generated. Default 0.</param>
/// <param name="RepetitionPenalty">repetition_penalty (vLLM), &gt; 0: divides positive logits (multiplies negative ones) of tokens
/// in the prompt or the output. Default 1 (off).</param>
/// <param name="IgnoreEos">ignore_eos (vLLM): keep generating past the end-of-sequence token, up to max_tokens.</param>
/// <param name="StreamOptions">stream_options, only with stream=true.</param>
/// <param name="PromptLogprobs">prompt_logprobs (vLLM): the log-probabilities of this many most likely tokens at each prompt
/// position after the first, plus the prompt token's; −1: the whole vocabulary. Not with stream=true.</param>
public sealed record CompletionRequest(
    string? Model, JsonElement Prompt, int? MaxTokens, double? Temperature, double? TopP, int? TopK, double? MinP, int? N, bool? Stream,
    JsonElement Stop, long? Seed, int? Logprobs, double? PresencePenalty, double? FrequencyPenalty, double? RepetitionPenalty,
    bool? IgnoreEos, StreamOptions? StreamOptions, int? PromptLogprobs) : IGenerationRequest
{
    /// <summary>echo: each choice's text (and logprobs, when asked) starts with its prompt.</summary>
    public bool? Echo { get; init; }
    /// <summary>best_of: accepted only equal to n; choosing the best of several sequences is not built.</summary>
    public int? BestOf { get; init; }
    /// <summary>
    /// logit_bias: token id (a JSON key, so a string) → bias added to that token's logit before sampling; −100 all but
    /// bans a token, +100 all but forces it. Values are clamped to [−100, 100] as vLLM does; a key that is not a token id is a 400.
    /// </summary>
    public Dictionary<string, double>? LogitBias { get; init; }
    /// <summary>min_tokens (vLLM): end-of-sequence, stop tokens and stop strings cannot end a choice before this many tokens. Default 0.</summary>
    public int? MinTokens { get; init; }
    /// <summary>stop_token_ids (vLLM): token ids that end a choice when generated; their text is left out unless <see cref="IncludeStopStrInOutput"/>.</summary>
    public List<int>? StopTokenIds { get; init; }
    /// <summary>include_stop_str_in_output (vLLM): keep the stop string or stop token that ended a choice in its text. Default false.</summary>
    public bool? IncludeStopStrInOutput { get; init; }
    /// <summary>skip_special_tokens (vLLM): leave special tokens (BOS, EOS, ...) out of the text. Default true.</summary>
    public bool? SkipSpecialTokens { get; init; }
    /// <summary>add_special_tokens (vLLM): a text prompt gets BOS unless it already starts with it. Default true.</summary>
    public bool? AddSpecialTokens { get; init; }
    /// <summary>
    /// truncate_prompt_tokens (vLLM): keep only this many prompt tokens (the last ones, or the first with
    /// <see cref="TruncationSide"/> "right"); −1 keeps max_model_len. At least 1 and at most max_model_len.
    /// </summary>
    public int? TruncatePromptTokens { get; init; }
    /// <summary>truncation_side (vLLM): "left" (the default: drop the start) or "right" (drop the end).</summary>
    public string? TruncationSide { get; init; }
    /// <summary>request_id (vLLM): the id of the response (cmpl-{id}) when the X-Request-Id header gives none; default a new GUID.</summary>
    public string? RequestId { get; init; }
    /// <summary>return_tokens_as_token_ids (vLLM): logprobs name tokens as "token_id:{id}" instead of their text.</summary>
    public bool? ReturnTokensAsTokenIds { get; init; }
    /// <summary>return_token_ids (vLLM): each choice also carries prompt_token_ids and token_ids.</summary>
    public bool? ReturnTokenIds { get; init; }
    /// <summary>vLLM's cache_salt: the prompt shares prefix-cache blocks only with requests of the same salt.</summary>
    public string? CacheSalt { get; init; }

    /// <summary>Fields no member takes: harmless ones are accepted, those of a feature not built only at their "off" value, any other is a 400 naming it.</summary>
    [JsonExtensionData]
    public Dictionary<string, JsonElement>? Unrecognized { get; init; }
}

/// <summary>OpenAI's legacy logprobs: per token its text, logprob (null for the first echoed prompt token), top entries and offset.</summary>
/// <param name="Tokens">Each token's text (or "token_id:{id}" with return_tokens_as_token_ids).</param>
/// <param name="TokenLogprobs">token_logprobs: each token's natural-log probability (−9999 for −∞); null for the first echoed prompt token.</param>
/// <param name="TopLogprobs">top_logprobs: per token, the most likely tokens' texts → logprobs, the chosen one included; null where the token has none.</param>
/// <param name="TextOffset">text_offset: where each token's text starts in the choice's text (counted over the whole stream).</param>
public sealed record CompletionLogprobs(List<string> Tokens, List<float?> TokenLogprobs, List<Dictionary<string, float>?> TopLogprobs, List<int> TextOffset);

/// <summary>One choice of a completion: in a body, its whole text; in a stream chunk, the text new since the last chunk.</summary>
/// <param name="Index">prompt index × n + sequence index.</param>
/// <param name="Text">The generated text (after the prompt with echo).</param>
/// <param name="Logprobs">The tokens' logprobs when the request asked for logprobs, else null.</param>
/// <param name="FinishReason">finish_reason: "stop" (end-of-sequence, a stop string or a stop token), "length" (max_tokens or
/// the context length), "abort" or "error"; null while the choice runs. Always written, null included.</param>
public sealed record CompletionChoice(int Index, string Text, CompletionLogprobs? Logprobs,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.Never)] string? FinishReason)
{
    /// <summary>The stop string or stop token id that ended the choice (vLLM).</summary>
    public object? StopReason { get; init; }
    /// <summary>prompt_logprobs (vLLM): per prompt position null (the first) or token id → entry; with prompt_logprobs (or echo with logprobs) only.</summary>
    public List<Dictionary<string, LogprobEntry>?>? PromptLogprobs { get; init; }
    /// <summary>prompt_token_ids (vLLM, return_token_ids): the prompt's token ids; in a stream, on a choice's first chunk only.</summary>
    public IReadOnlyList<int>? PromptTokenIds { get; init; }
    /// <summary>token_ids (vLLM, return_token_ids): the generated token ids; in a stream, those new in this chunk.</summary>
    public IReadOnlyList<int>? TokenIds { get; init; }
}

/// <summary>The body of POST /v1/completions, or one stream chunk of it.</summary>
/// <param name="Id">"cmpl-" + the request id (<see cref="CompletionRequest.RequestId"/>); the same on every chunk.</param>
/// <param name="Object">Always "text_completion".</param>
/// <param name="Created">When the request started, in Unix seconds.</param>
/// <param name="Model">The model field as the request gave it (else the served model name).</param>
/// <param name="Choices">Every choice in a body; one per chunk in a stream, none in the usage chunk.</param>
/// <param name="Usage">Token counts: always in a body; in a stream only with stream_options.include_usage.</param>
public sealed record CompletionResponse(string Id, string Object, long Created, string Model, List<CompletionChoice> Choices, Usage? Usage);
