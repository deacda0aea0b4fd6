using System.Text.Json;

namespace LoraEngine.Server;

/// <summary>Turns wire requests into engine sampling parameters (validation happens in the engine).</summary>
internal static class RequestMapping
{
    public static IReadOnlyList<string>? Stops(JsonElement stop) => stop.ValueKind switch
    {
        JsonValueKind.String => [stop.GetString()!],
        JsonValueKind.Array => stop.EnumerateArray().Select(s => s.ValueKind == JsonValueKind.String ? s.GetString()!
            : throw new ArgumentException("stop must be a string or a list of strings", "stop")).ToArray(),
        JsonValueKind.Undefined or JsonValueKind.Null => null,
        _ => throw new ArgumentException("stop must be a string or a list of strings", "stop"),
    };

    public static SamplingParams Completion(CompletionRequest r) => new()
    {
        N = r.N ?? 1,
        Temperature = r.Temperature ?? 1.0,
        TopP = r.TopP ?? 1.0,
        TopK = r.TopK ?? 0,
        MinP = r.MinP ?? 0,
        MaxTokens = r.MaxTokens ?? 16,
        Stop = Stops(r.Stop),
        Seed = r.Seed,
        Logprobs = r.Logprobs,
        PromptLogprobs = r.PromptLogprobs,
        PresencePenalty = r.PresencePenalty ?? 0,
        FrequencyPenalty = r.FrequencyPenalty ?? 0,
        RepetitionPenalty = r.RepetitionPenalty ?? 1,
        IgnoreEos = r.IgnoreEos ?? false,
    };

    public static SamplingParams Chat(ChatCompletionRequest r, int maxModelLen, int promptTokens) => new()
    {
        N = r.N ?? 1,
        Temperature = r.Temperature ?? 1.0,
        TopP = r.TopP ?? 1.0,
        TopK = r.TopK ?? 0,
        MinP = r.MinP ?? 0,
        // Chat requests without a limit may use the rest of the context, as vLLM does.
        MaxTokens = r.MaxCompletionTokens ?? r.MaxTokens ?? Math.Max(1, maxModelLen - promptTokens),
        Stop = Stops(r.Stop),
        Seed = r.Seed,
        Logprobs = r.Logprobs == true ? r.TopLogprobs ?? 0 : null,
        PresencePenalty = r.PresencePenalty ?? 0,
        FrequencyPenalty = r.FrequencyPenalty ?? 0,
        RepetitionPenalty = r.RepetitionPenalty ?? 1,
        IgnoreEos = r.IgnoreEos ?? false,
    };

    public static string MessageText(ChatMessageDto m) => m.Content.ValueKind switch
    {
        JsonValueKind.String => m.Content.GetString()!,
        JsonValueKind.Array => string.Concat(m.Content.EnumerateArray()
            .Where(p => p.TryGetProperty("type", out var t) && t.GetString() == "text")
            .Select(p => p.GetProperty("text").GetString())),
        JsonValueKind.Null or JsonValueKind.Undefined => "",
        _ => throw new ArgumentException("message content must be a string or a list of parts", "messages"),
    };
}
