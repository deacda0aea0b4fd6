using System.Text.Json;
using System.Text.Json.Serialization;

namespace LoraEngine.Server;

/// <summary>One chat message; content is a string, null or a list of parts (checked by the route).</summary>
public sealed record ChatMessageDto(string Role, JsonElement Content) : IHasUnrecognizedFields
{
    public string? Name { get; init; }
    public string? ToolCallId { get; init; }
    public JsonElement ToolCalls { get; init; }

    [JsonExtensionData]
    public Dictionary<string, JsonElement>? Unrecognized { get; init; }
}

/// <summary>POST /v1/chat/completions with vLLM's extra parameters after the primary constructor.</summary>
public sealed record ChatCompletionRequest(
    string? Model, List<ChatMessageDto>? Messages, int? MaxTokens, int? MaxCompletionTokens, double? Temperature, double? TopP, int? TopK,
    double? MinP, int? N, bool? Stream, JsonElement Stop, long? Seed, bool? Logprobs, int? TopLogprobs, double? PresencePenalty,
    double? FrequencyPenalty, double? RepetitionPenalty, bool? IgnoreEos, StreamOptions? StreamOptions) : IGenerationRequest, IChatInput
{
    public bool? Echo { get; init; }
    public int? BestOf { get; init; }
    public int? PromptLogprobs { get; init; }
    public Dictionary<string, double>? LogitBias { get; init; }
    public int? MinTokens { get; init; }
    public List<int>? StopTokenIds { get; init; }
    public bool? IncludeStopStrInOutput { get; init; }
    public bool? SkipSpecialTokens { get; init; }
    public bool? AddSpecialTokens { get; init; }
    public bool? AddGenerationPrompt { get; init; }
    public bool? ContinueFinalMessage { get; init; }
    public Dictionary<string, JsonElement>? ChatTemplateKwargs { get; init; }
    public JsonElement Documents { get; init; }
    public string? ReasoningEffort { get; init; }
    public int? TruncatePromptTokens { get; init; }
    public string? TruncationSide { get; init; }
    public string? RequestId { get; init; }
    public bool? ReturnTokensAsTokenIds { get; init; }
    public bool? ReturnTokenIds { get; init; }
    /// <summary>vLLM's cache_salt: the prompt shares prefix-cache blocks only with requests of the same salt.</summary>
    public string? CacheSalt { get; init; }

    [JsonExtensionData]
    public Dictionary<string, JsonElement>? Unrecognized { get; init; }
}

public sealed record ChatMessageOut(string? Role, string? Content);

public sealed record TopLogprob(string Token, float Logprob, List<int> Bytes);

public sealed record ChatTokenLogprob(string Token, float Logprob, List<int> Bytes, List<TopLogprob> TopLogprobs);

public sealed record ChatLogprobs(List<ChatTokenLogprob> Content);

public sealed record ChatChoice(int Index, ChatMessageOut? Message, ChatMessageOut? Delta, ChatLogprobs? Logprobs,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.Never)] string? FinishReason)
{
    /// <summary>The stop string or stop token id that ended the choice (vLLM).</summary>
    public object? StopReason { get; init; }
    public IReadOnlyList<int>? TokenIds { get; init; }
}

public sealed record ChatCompletionResponse(string Id, string Object, long Created, string Model, List<ChatChoice> Choices, Usage? Usage)
{
    /// <summary>vLLM puts a chat request's prompt logprobs and prompt token ids beside the choices.</summary>
    public List<Dictionary<string, LogprobEntry>?>? PromptLogprobs { get; init; }
    public IReadOnlyList<int>? PromptTokenIds { get; init; }
}
