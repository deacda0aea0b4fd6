using System.Text.Json;
using System.Text.Json.Serialization;

namespace LoraEngine.Server;

// Wire records of vLLM's OpenAI-compatible API shared by the routes (snake_case on the wire). The completion, chat and
// tokenizer records have files of their own.

/// <summary>Fields of a request body that no record member took: each is checked against <see cref="RequestParameters"/>.</summary>
internal interface IHasUnrecognizedFields
{
    Dictionary<string, JsonElement>? Unrecognized { get; }
}

public sealed record StreamOptions(bool? IncludeUsage) : IHasUnrecognizedFields
{
    /// <summary>With include_usage: every chunk carries the usage so far.</summary>
    public bool? ContinuousUsageStats { get; init; }

    [JsonExtensionData]
    public Dictionary<string, JsonElement>? Unrecognized { get; init; }
}

public sealed record Usage(int PromptTokens, int CompletionTokens, int TotalTokens);

public sealed record ModelCard(string Id, string Object, long Created, string OwnedBy, string? Root, string? Parent, int? MaxModelLen);

public sealed record ModelList(string Object, List<ModelCard> Data);

public sealed record LoadLoraRequest(string? LoraName, string? LoraPath, bool? LoadInplace);

public sealed record UnloadLoraRequest(string? LoraName, int? LoraIntId);

public sealed record ErrorInfo(string Message, string Type, string? Param, int Code);

public sealed record ErrorResponse(ErrorInfo Error);

/// <summary>vLLM's Logprob as it appears in prompt_logprobs: keyed by token id.</summary>
public sealed record LogprobEntry(float Logprob, int? Rank, string? DecodedToken);

internal static class Wire
{
    public static readonly JsonSerializerOptions Options = new(JsonSerializerDefaults.Web)
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };
}
