using System.Text.Json;
using System.Text.Json.Serialization;

namespace LoraEngine.Server;

/// <summary>POST /tokenize: a prompt, or chat messages rendered by the chat template (vLLM's two request shapes in one).</summary>
public sealed record TokenizeRequest(string? Model, string? Prompt, List<ChatMessageDto>? Messages) : IChatInput, IHasUnrecognizedFields
{
    /// <summary>Default: true for a prompt, false for messages (the template adds BOS), as vLLM.</summary>
    public bool? AddSpecialTokens { get; init; }
    public bool? AddGenerationPrompt { get; init; }
    public bool? ContinueFinalMessage { get; init; }
    public Dictionary<string, JsonElement>? ChatTemplateKwargs { get; init; }
    public JsonElement Documents { get; init; }
    public string? ReasoningEffort { get; init; }
    public bool? ReturnTokenStrs { get; init; }

    [JsonExtensionData]
    public Dictionary<string, JsonElement>? Unrecognized { get; init; }
}

public sealed record TokenizeResponse(int Count, int MaxModelLen, IReadOnlyList<int> Tokens)
{
    public List<string?>? TokenStrs { get; init; }
}

/// <summary>POST /detokenize.</summary>
public sealed record DetokenizeRequest(string? Model, List<int>? Tokens) : IHasUnrecognizedFields
{
    [JsonExtensionData]
    public Dictionary<string, JsonElement>? Unrecognized { get; init; }
}

public sealed record DetokenizeResponse(string Prompt);
