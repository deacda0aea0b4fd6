using System.Text.Json;
using System.Text.Json.Serialization;

namespace LoraEngine.Server;

/// <summary>
/// POST /v1/completions. Prompt and stop take the shapes OpenAI allows (read as JsonElement, checked by the route);
/// the members after the primary constructor are vLLM's extra parameters. Fields no member takes land in
/// <see cref="Unrecognized"/> and are refused unless harmless (<see cref="RequestParameters"/>).
/// </summary>
public sealed record CompletionRequest(
    string? Model, JsonElement Prompt, int? MaxTokens, double? Temperature, double? TopP, int? TopK, double? MinP, int? N, bool? Stream,
    JsonElement Stop, long? Seed, int? Logprobs, double? PresencePenalty, double? FrequencyPenalty, double? RepetitionPenalty,
    bool? IgnoreEos, StreamOptions? StreamOptions, int? PromptLogprobs) : IGenerationRequest
{
    public bool? Echo { get; init; }
    public int? BestOf { get; init; }
    public Dictionary<string, double>? LogitBias { get; init; }
    public int? MinTokens { get; init; }
    public List<int>? StopTokenIds { get; init; }
    public bool? IncludeStopStrInOutput { get; init; }
    public bool? SkipSpecialTokens { get; init; }
    public bool? AddSpecialTokens { get; init; }
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

/// <summary>OpenAI's legacy logprobs: per token its text, logprob (null for the first echoed prompt token), top entries and offset.</summary>
public sealed record CompletionLogprobs(List<string> Tokens, List<float?> TokenLogprobs, List<Dictionary<string, float>?> TopLogprobs, List<int> TextOffset);

public sealed record CompletionChoice(int Index, string Text, CompletionLogprobs? Logprobs,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.Never)] string? FinishReason)
{
    /// <summary>The stop string or stop token id that ended the choice (vLLM).</summary>
    public object? StopReason { get; init; }
    public List<Dictionary<string, LogprobEntry>?>? PromptLogprobs { get; init; }
    public IReadOnlyList<int>? PromptTokenIds { get; init; }
    public IReadOnlyList<int>? TokenIds { get; init; }
}

public sealed record CompletionResponse(string Id, string Object, long Created, string Model, List<CompletionChoice> Choices, Usage? Usage);
