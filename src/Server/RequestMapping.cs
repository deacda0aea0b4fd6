using System.Globalization;
using System.Text.Json;

namespace LoraEngine.Server;

/// <summary>The fields completions and chat requests share that the shared checks and the sampling mapping read.</summary>
internal interface IGenerationRequest : IHasUnrecognizedFields
{
    int? N { get; }
    int? BestOf { get; }
    bool? Stream { get; }
    StreamOptions? StreamOptions { get; }
    double? Temperature { get; }
    double? TopP { get; }
    int? TopK { get; }
    double? MinP { get; }
    JsonElement Stop { get; }
    long? Seed { get; }
    double? PresencePenalty { get; }
    double? FrequencyPenalty { get; }
    double? RepetitionPenalty { get; }
    bool? IgnoreEos { get; }
    int? PromptLogprobs { get; }
    Dictionary<string, double>? LogitBias { get; }
    int? MinTokens { get; }
    List<int>? StopTokenIds { get; }
    bool? IncludeStopStrInOutput { get; }
    bool? SkipSpecialTokens { get; }
    string? TruncationSide { get; }
}

/// <summary>Turns wire requests into engine sampling parameters; ranges are checked by <see cref="SamplingParams.Validate"/>.</summary>
internal static class RequestMapping
{
    /// <summary>Checks vLLM makes on the request itself, before any prompt is read.</summary>
    public static void CheckShared(IGenerationRequest r)
    {
        RequestParameters.CheckNested(r.StreamOptions, "stream_options");
        if (r.BestOf is int bestOf && bestOf != (r.N ?? 1))
            throw new BadRequestException($"best_of must equal n ({r.N ?? 1}): returning the best of several sequences is not built.", "best_of");
        if (r.StreamOptions != null && r.Stream != true)
            throw new BadRequestException("Stream options can only be defined when `stream=True`.", "stream_options");
        if (r.Stream == true && r.PromptLogprobs is > 0 or -1)
            throw new BadRequestException("`prompt_logprobs` are not available when `stream=True`.", "prompt_logprobs");
        if (r.TruncationSide is not (null or "left" or "right"))
            throw new BadRequestException($"truncation_side must be 'left' or 'right', got '{r.TruncationSide}'.", "truncation_side");
    }

    /// <summary>
    /// A max_tokens the context cannot hold after a prompt is refused, as vLLM does, rather than cut short. A prompt
    /// that alone fills the context is left to the engine's own refusal.
    /// </summary>
    public static void CheckFits(IEnumerable<EnginePrompt> prompts, int? maxTokens, string field, int maxModelLen)
    {
        if (maxTokens is not int max) return;
        foreach (int n in prompts.Select(p => p.TokenIds.Count))
            if (n < maxModelLen && n + max > maxModelLen)
                throw new BadRequestException($"'{field}' is too large: {max}. This model's maximum context length is {maxModelLen} tokens " +
                    $"and your request has {n} input tokens ({max} > {maxModelLen} - {n}).", field);
    }

    public static SamplingParams Sampling(IGenerationRequest r, int maxTokens, int? logprobs, int? promptLogprobs) => new()
    {
        N = r.N ?? 1,
        Temperature = r.Temperature ?? 1.0,
        TopP = r.TopP ?? 1.0,
        TopK = r.TopK ?? 0,
        MinP = r.MinP ?? 0,
        MaxTokens = maxTokens,
        MinTokens = r.MinTokens ?? 0,
        Stop = Stops(r.Stop),
        StopTokenIds = r.StopTokenIds,
        IncludeStopStrInOutput = r.IncludeStopStrInOutput ?? false,
        SkipSpecialTokens = r.SkipSpecialTokens ?? true,
        Seed = r.Seed,
        Logprobs = logprobs,
        PromptLogprobs = promptLogprobs,
        PresencePenalty = r.PresencePenalty ?? 0,
        FrequencyPenalty = r.FrequencyPenalty ?? 0,
        RepetitionPenalty = r.RepetitionPenalty ?? 1,
        IgnoreEos = r.IgnoreEos ?? false,
        LogitBias = LogitBias(r.LogitBias),
        // A stream sends what each step added (the writers diff the cumulative outputs); a plain answer needs the last output only.
        OutputKind = r.Stream == true ? RequestOutputKind.Cumulative : RequestOutputKind.FinalOnly,
    };

    public static IReadOnlyList<string>? Stops(JsonElement stop) => stop.ValueKind switch
    {
        JsonValueKind.String => [stop.GetString()!],
        JsonValueKind.Array => stop.EnumerateArray().Select(s => s.ValueKind == JsonValueKind.String ? s.GetString()!
            : throw new BadRequestException("stop must be a string or a list of strings", "stop")).ToArray(),
        JsonValueKind.Undefined or JsonValueKind.Null => null,
        _ => throw new BadRequestException("stop must be a string or a list of strings", "stop"),
    };

    /// <summary>OpenAI's logit_bias: token ids as JSON keys (strings), biases clamped to [−100, 100] as vLLM does.</summary>
    static Dictionary<int, float>? LogitBias(Dictionary<string, double>? bias)
    {
        if (bias is null) return null;
        var result = new Dictionary<int, float>();
        foreach (var (key, value) in bias)
        {
            if (!int.TryParse(key, NumberStyles.Integer, CultureInfo.InvariantCulture, out int token))
                throw new BadRequestException($"Found token_id '{key}' in logit_bias that is not an integer or string representing an integer", "logit_bias");
            result[token] = (float)Math.Clamp(value, -100, 100);
        }
        return result;
    }
}
