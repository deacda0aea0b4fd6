using System.Text.Json;
using System.Text.Json.Serialization;

namespace LoraEngine.Server;

// Wire records of vLLM's OpenAI-compatible API (snake_case on the wire). Prompt, stop and message content take the
// shapes OpenAI allows (a string or a list), read as JsonElement and checked by the handlers.

public sealed record CompletionRequest(
    string? Model, JsonElement Prompt, int? MaxTokens, double? Temperature, double? TopP, int? TopK, double? MinP, int? N, bool? Stream,
    JsonElement Stop, long? Seed, int? Logprobs, double? PresencePenalty, double? FrequencyPenalty, double? RepetitionPenalty,
    bool? IgnoreEos, StreamOptions? StreamOptions, int? PromptLogprobs);

public sealed record ChatMessageDto(string Role, JsonElement Content);

public sealed record ChatCompletionRequest(
    string? Model, List<ChatMessageDto>? Messages, int? MaxTokens, int? MaxCompletionTokens, double? Temperature, double? TopP, int? TopK,
    double? MinP, int? N, bool? Stream, JsonElement Stop, long? Seed, bool? Logprobs, int? TopLogprobs, double? PresencePenalty,
    double? FrequencyPenalty, double? RepetitionPenalty, bool? IgnoreEos, StreamOptions? StreamOptions);

public sealed record StreamOptions(bool? IncludeUsage);

public sealed record Usage(int PromptTokens, int CompletionTokens, int TotalTokens);

public sealed record CompletionLogprobs(List<string> Tokens, List<float> TokenLogprobs, List<Dictionary<string, float>> TopLogprobs, List<int> TextOffset);

public sealed record CompletionChoice(int Index, string Text, CompletionLogprobs? Logprobs, string? FinishReason);

public sealed record CompletionResponse(string Id, string Object, long Created, string Model, List<CompletionChoice> Choices, Usage? Usage);

public sealed record ChatMessageOut(string? Role, string? Content);

public sealed record TopLogprob(string Token, float Logprob, List<int> Bytes);

public sealed record ChatTokenLogprob(string Token, float Logprob, List<int> Bytes, List<TopLogprob> TopLogprobs);

public sealed record ChatLogprobs(List<ChatTokenLogprob> Content);

public sealed record ChatChoice(int Index, ChatMessageOut? Message, ChatMessageOut? Delta, ChatLogprobs? Logprobs, string? FinishReason);

public sealed record ChatCompletionResponse(string Id, string Object, long Created, string Model, List<ChatChoice> Choices, Usage? Usage);

public sealed record ModelCard(string Id, string Object, long Created, string OwnedBy, string? Root, string? Parent, int? MaxModelLen);

public sealed record ModelList(string Object, List<ModelCard> Data);

public sealed record LoadLoraRequest(string? LoraName, string? LoraPath, bool? LoadInplace);

public sealed record UnloadLoraRequest(string? LoraName, int? LoraIntId);

public sealed record ErrorInfo(string Message, string Type, string? Param, int Code);

public sealed record ErrorResponse(ErrorInfo Error);

internal static class Wire
{
    public static readonly JsonSerializerOptions Options = new(JsonSerializerDefaults.Web)
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };
}
