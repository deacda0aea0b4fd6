using System.Text.Json;
using System.Text.Json.Serialization;

namespace LoraEngine.Server;

/// <summary>One chat message; content is a string, null or a list of parts (checked by the route).</summary>
/// <param name="Role">"system", "user", "assistant", "tool" or "developer"; any other is a 400.</param>
/// <param name="Content">A string, null (empty) or a list of text parts ({"type": "text", "text": ...} or "refusal"), joined
/// with "\n"; image, audio, video and file parts are refused: the model reads text only.</param>
public sealed record ChatMessageDto(string Role, JsonElement Content) : IHasUnrecognizedFields
{
    /// <summary>The author's name; given to the chat template as the message's name.</summary>
    public string? Name { get; init; }
    /// <summary>tool_call_id: for a "tool" message, the call it answers; given to the chat template.</summary>
    public string? ToolCallId { get; init; }
    /// <summary>tool_calls: an assistant message's earlier tool calls, given to the chat template as they are (no tool is called here).</summary>
    public JsonElement ToolCalls { get; init; }

    /// <summary>Fields a message does not declare: any one is refused with a 400 naming it (messages[i].{name}).</summary>
    [JsonExtensionData]
    public Dictionary<string, JsonElement>? Unrecognized { get; init; }
}

/// <summary>POST /v1/chat/completions with vLLM's extra parameters after the primary constructor.</summary>
/// <param name="Model">The served model name for the base model, or an adapter's name; null: the base model. An unknown name is a 404.</param>
/// <param name="Messages">The conversation, rendered by the model's chat template into one prompt; must not be empty.</param>
/// <param name="MaxTokens">max_tokens: OpenAI's older name for <paramref name="MaxCompletionTokens"/>, read when that is absent.</param>
/// <param name="MaxCompletionTokens">max_completion_tokens: the most tokens to generate per choice; default the rest of the context.</param>
/// <param name="Temperature">Sampling temperature, ≥ 0; 0 is greedy. Default 1.</param>
/// <param name="TopP">top_p: sample from the smallest set of tokens whose probabilities add up to this, in (0, 1]. Default 1 (off).</param>
/// <param name="TopK">top_k (vLLM): sample from the k most likely tokens; 0 or −1: off (the default).</param>
/// <param name="MinP">min_p (vLLM): drop tokens less likely than this fraction of the most likely one's probability, in [0, 1]. Default 0 (off).</param>
/// <param name="N">How many choices to generate; default 1 (the server's --max-n caps it).</param>
/// <param name="Stream">true: answer with server-sent events, each chunk a <see cref="ChatCompletionResponse"/> whose choice
/// has a delta, then <c>data: [DONE]</c>.</param>
/// <param name="Stop">A string or a list of strings that end a choice when generated; the stop string is left out of the
/// content unless <see cref="IncludeStopStrInOutput"/>.</param>
/// <param name="Seed">Per-request seed: the same seed gives the same tokens whatever else is in the batch.</param>
/// <param name="Logprobs">true: each choice carries the log-probabilities of its tokens.</param>
/// <param name="TopLogprobs">top_logprobs: with logprobs, also this many most likely tokens at each position; −1: the whole
/// vocabulary. More than the engine's MaxLogprobs (default 20) is a 400.</param>
/// <param name="PresencePenalty">presence_penalty, in [−2, 2]: subtracted once from the logit of every token already generated. Default 0.</param>
/// <param name="FrequencyPenalty">frequency_penalty, in [−2, 2]: subtracted from a token's logit once per time it was generated. Default 0.</param>
/// <param name="RepetitionPenalty">repetition_penalty (vLLM), &gt; 0: divides positive logits (multiplies negative ones) of tokens
/// in the prompt or the output. Default 1 (off).</param>
/// <param name="IgnoreEos">ignore_eos (vLLM): keep generating past the end-of-sequence token, up to the token limit.</param>
/// <param name="StreamOptions">stream_options, only with stream=true.</param>
public sealed record ChatCompletionRequest(
    string? Model, List<ChatMessageDto>? Messages, int? MaxTokens, int? MaxCompletionTokens, double? Temperature, double? TopP, int? TopK,
    double? MinP, int? N, bool? Stream, JsonElement Stop, long? Seed, bool? Logprobs, int? TopLogprobs, double? PresencePenalty,
    double? FrequencyPenalty, double? RepetitionPenalty, bool? IgnoreEos, StreamOptions? StreamOptions) : IGenerationRequest, IChatInput
{
    /// <summary>echo (vLLM): the reply starts with the last message's content when that message has the reply's role.</summary>
    public bool? Echo { get; init; }
    /// <summary>best_of: accepted only equal to n; choosing the best of several sequences is not built.</summary>
    public int? BestOf { get; init; }
    /// <summary>
    /// prompt_logprobs (vLLM): the log-probabilities of this many most likely tokens at each position of the rendered
    /// prompt after the first, plus the prompt token's; −1: the whole vocabulary. Not with stream=true.
    /// </summary>
    public int? PromptLogprobs { get; init; }
    /// <summary>
    /// logit_bias: token id (a JSON key, so a string) → bias added to that token's logit before sampling; −100 all but
    /// bans a token, +100 all but forces it. Values are clamped to [−100, 100] as vLLM does; a key that is not a token id is a 400.
    /// </summary>
    public Dictionary<string, double>? LogitBias { get; init; }
    /// <summary>min_tokens (vLLM): end-of-sequence, stop tokens and stop strings cannot end a choice before this many tokens. Default 0.</summary>
    public int? MinTokens { get; init; }
    /// <summary>stop_token_ids (vLLM): token ids that end a choice when generated; their text is left out unless <see cref="IncludeStopStrInOutput"/>.</summary>
    public List<int>? StopTokenIds { get; init; }
    /// <summary>include_stop_str_in_output (vLLM): keep the stop string or stop token that ended a choice in its content. Default false.</summary>
    public bool? IncludeStopStrInOutput { get; init; }
    /// <summary>skip_special_tokens (vLLM): leave special tokens (BOS, EOS, ...) out of the content. Default true.</summary>
    public bool? SkipSpecialTokens { get; init; }
    /// <summary>add_special_tokens (vLLM): add BOS to the rendered prompt unless it starts with it. Default false: the template writes BOS.</summary>
    public bool? AddSpecialTokens { get; init; }
    /// <summary>add_generation_prompt (vLLM): end the prompt with the template's opening of an assistant turn. Default true.</summary>
    public bool? AddGenerationPrompt { get; init; }
    /// <summary>
    /// continue_final_message (vLLM): leave the last message open so the model continues it (a prefilled reply). Default
    /// false; true together with add_generation_prompt is a 400.
    /// </summary>
    public bool? ContinueFinalMessage { get; init; }
    /// <summary>chat_template_kwargs (vLLM): extra variables for the chat template; one that a request field sets itself (messages, documents, ...) is a 400.</summary>
    public Dictionary<string, JsonElement>? ChatTemplateKwargs { get; init; }
    /// <summary>documents (vLLM): a list of documents (usually objects with "title" and "text") given to the chat template for retrieval-augmented prompts.</summary>
    public JsonElement Documents { get; init; }
    /// <summary>reasoning_effort: given to the chat template as it is ("low", "medium", "high"); the model does not reason separately.</summary>
    public string? ReasoningEffort { get; init; }
    /// <summary>
    /// truncate_prompt_tokens (vLLM): keep only this many tokens of the rendered prompt (the last ones, or the first with
    /// <see cref="TruncationSide"/> "right"); −1 keeps max_model_len. At least 1 and at most max_model_len.
    /// </summary>
    public int? TruncatePromptTokens { get; init; }
    /// <summary>truncation_side (vLLM): "left" (the default: drop the start) or "right" (drop the end).</summary>
    public string? TruncationSide { get; init; }
    /// <summary>request_id (vLLM): the id of the response (chatcmpl-{id}) when the X-Request-Id header gives none; default a new GUID.</summary>
    public string? RequestId { get; init; }
    /// <summary>return_tokens_as_token_ids (vLLM): logprobs name tokens as "token_id:{id}" instead of their text.</summary>
    public bool? ReturnTokensAsTokenIds { get; init; }
    /// <summary>return_token_ids (vLLM): the response also carries prompt_token_ids and each choice its token_ids.</summary>
    public bool? ReturnTokenIds { get; init; }
    /// <summary>vLLM's cache_salt: the prompt shares prefix-cache blocks only with requests of the same salt.</summary>
    public string? CacheSalt { get; init; }

    /// <summary>Fields no member takes: harmless ones are accepted, those of a feature not built only at their "off" value, any other is a 400 naming it.</summary>
    [JsonExtensionData]
    public Dictionary<string, JsonElement>? Unrecognized { get; init; }
}

/// <summary>A reply message (a choice's message) or the part of it new in a stream chunk (a choice's delta).</summary>
/// <param name="Role">"assistant", or the last message's role without add_generation_prompt; in a stream only on each choice's first chunk.</param>
/// <param name="Content">The reply's text; in a stream, the text new since the last chunk.</param>
public sealed record ChatMessageOut(string? Role, string? Content);

/// <summary>One of the most likely tokens at a position (an entry of top_logprobs).</summary>
/// <param name="Token">The token's text (or "token_id:{id}" with return_tokens_as_token_ids).</param>
/// <param name="Logprob">Its natural-log probability; −9999 stands for −∞.</param>
/// <param name="Bytes">The token's UTF-8 bytes, for tokens that are part of a character.</param>
public sealed record TopLogprob(string Token, float Logprob, List<int> Bytes);

/// <summary>A generated token's logprob entry (an entry of logprobs.content).</summary>
/// <param name="Token">The token's text (or "token_id:{id}" with return_tokens_as_token_ids).</param>
/// <param name="Logprob">Its natural-log probability; −9999 stands for −∞.</param>
/// <param name="Bytes">The token's UTF-8 bytes, for tokens that are part of a character.</param>
/// <param name="TopLogprobs">top_logprobs: the request's top_logprobs most likely tokens at this position, most likely first.</param>
public sealed record ChatTokenLogprob(string Token, float Logprob, List<int> Bytes, List<TopLogprob> TopLogprobs);

/// <summary>A choice's logprobs.</summary>
/// <param name="Content">One entry per generated token (in a stream, per token new in the chunk).</param>
public sealed record ChatLogprobs(List<ChatTokenLogprob> Content);

/// <summary>One choice of a chat completion: a message in a body, a delta in a stream chunk.</summary>
/// <param name="Index">The sequence's index, 0 to n − 1.</param>
/// <param name="Message">The whole reply (a body); null in a stream chunk.</param>
/// <param name="Delta">What the chunk adds (a stream); null in a body.</param>
/// <param name="Logprobs">The tokens' logprobs when the request asked for logprobs, else null.</param>
/// <param name="FinishReason">finish_reason: "stop" (end-of-sequence, a stop string or a stop token), "length" (the token limit
/// or the context length), "abort" or "error"; null while the choice runs. Always written, null included.</param>
public sealed record ChatChoice(int Index, ChatMessageOut? Message, ChatMessageOut? Delta, ChatLogprobs? Logprobs,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.Never)] string? FinishReason)
{
    /// <summary>The stop string or stop token id that ended the choice (vLLM).</summary>
    public object? StopReason { get; init; }
    /// <summary>token_ids (vLLM, return_token_ids): the generated token ids; in a stream, those new in this chunk.</summary>
    public IReadOnlyList<int>? TokenIds { get; init; }
}

/// <summary>The body of POST /v1/chat/completions, or one stream chunk of it.</summary>
/// <param name="Id">"chatcmpl-" + the request id (<see cref="ChatCompletionRequest.RequestId"/>); the same on every chunk.</param>
/// <param name="Object">"chat.completion" for a body, "chat.completion.chunk" for a stream chunk.</param>
/// <param name="Created">When the request started, in Unix seconds.</param>
/// <param name="Model">The model field as the request gave it (else the served model name).</param>
/// <param name="Choices">Every choice in a body; one per chunk in a stream, none in the usage chunk.</param>
/// <param name="Usage">Token counts: always in a body; in a stream only with stream_options.include_usage.</param>
public sealed record ChatCompletionResponse(string Id, string Object, long Created, string Model, List<ChatChoice> Choices, Usage? Usage)
{
    /// <summary>vLLM puts a chat request's prompt logprobs and prompt token ids beside the choices.</summary>
    public List<Dictionary<string, LogprobEntry>?>? PromptLogprobs { get; init; }
    /// <summary>prompt_token_ids (vLLM, return_token_ids): the rendered prompt's token ids; in a stream, on the first chunk only.</summary>
    public IReadOnlyList<int>? PromptTokenIds { get; init; }
}
