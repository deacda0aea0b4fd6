namespace LoraEngine;

/// <summary>
/// How to sample a request (vLLM's SamplingParams). Temperature 0 is greedy. Logprobs are log-softmax of the
/// model's raw logits (vLLM's default "raw_logprobs"), before temperature and penalties.
/// </summary>
public sealed record SamplingParams
{
    /// <summary>Number of sequences to generate for the prompt.</summary>
    public int N { get; init; } = 1;
    public double Temperature { get; init; } = 1.0;
    public double TopP { get; init; } = 1.0;
    /// <summary>0 or -1: off.</summary>
    public int TopK { get; init; }
    public double MinP { get; init; }
    public double PresencePenalty { get; init; }
    public double FrequencyPenalty { get; init; }
    /// <summary>1: off. Divides positive logits (multiplies negative ones) of tokens in the prompt or output.</summary>
    public double RepetitionPenalty { get; init; } = 1.0;
    public int? MaxTokens { get; init; } = 16;
    public int MinTokens { get; init; }
    public bool IgnoreEos { get; init; }
    /// <summary>Top logprobs to return per generated token (the sampled one is always included).</summary>
    public int? Logprobs { get; init; }
    /// <summary>Top logprobs to return per prompt token after the first.</summary>
    public int? PromptLogprobs { get; init; }
    /// <summary>Per-request seed: the same seed gives the same tokens whatever else is in the batch.</summary>
    public long? Seed { get; init; }
    /// <summary>Strings that end generation; not included in the output text.</summary>
    public IReadOnlyList<string>? Stop { get; init; }
    public IReadOnlyList<int>? StopTokenIds { get; init; }
    public bool IncludeStopStrInOutput { get; init; }
    public bool SkipSpecialTokens { get; init; } = true;
    /// <summary>
    /// Token id → bias added to that token's logit before penalties and sampling (OpenAI's logit_bias): −100 all but
    /// bans a token, +100 all but forces it. Values in [−100, 100]; the server clamps as vLLM does.
    /// </summary>
    public IReadOnlyDictionary<int, float>? LogitBias { get; init; }

    /// <summary>Checks ranges (vLLM's messages); an ArgumentException whose ParamName is the field.</summary>
    public void Validate(int maxLogprobs, int vocabSize)
    {
        if (N < 1) throw Bad(nameof(N), $"n must be at least 1, got {N}.");
        if (!(Temperature >= 0) || double.IsInfinity(Temperature)) throw Bad(nameof(Temperature), $"temperature must be non-negative, got {Temperature}.");
        if (!(TopP > 0 && TopP <= 1)) throw Bad(nameof(TopP), $"top_p must be in (0, 1], got {TopP}.");
        if (TopK < -1) throw Bad(nameof(TopK), $"top_k must be -1 (disable), or at least 1, got {TopK}.");
        if (!(MinP >= 0 && MinP <= 1)) throw Bad(nameof(MinP), $"min_p must be in [0, 1], got {MinP}.");
        if (!(PresencePenalty >= -2 && PresencePenalty <= 2)) throw Bad(nameof(PresencePenalty), $"presence_penalty must be in [-2, 2], got {PresencePenalty}.");
        if (!(FrequencyPenalty >= -2 && FrequencyPenalty <= 2)) throw Bad(nameof(FrequencyPenalty), $"frequency_penalty must be in [-2, 2], got {FrequencyPenalty}.");
        if (!(RepetitionPenalty > 0) || double.IsInfinity(RepetitionPenalty)) throw Bad(nameof(RepetitionPenalty), $"repetition_penalty must be greater than zero, got {RepetitionPenalty}.");
        if (MaxTokens is < 1) throw Bad(nameof(MaxTokens), $"max_tokens must be at least 1, got {MaxTokens}.");
        if (MinTokens < 0) throw Bad(nameof(MinTokens), $"min_tokens must be greater than or equal to 0, got {MinTokens}.");
        if (MaxTokens is int max && MinTokens > max) throw Bad(nameof(MinTokens), $"min_tokens must be less than or equal to max_tokens={max}, got {MinTokens}.");
        CheckLogprobs(Logprobs, nameof(Logprobs), maxLogprobs, vocabSize);
        CheckLogprobs(PromptLogprobs, nameof(PromptLogprobs), maxLogprobs, vocabSize);
        if (Stop?.Any(string.IsNullOrEmpty) == true) throw Bad(nameof(Stop), "stop strings must not be empty.");
        if (StopTokenIds?.Any(id => id < 0 || id >= vocabSize) == true) throw Bad(nameof(StopTokenIds), $"stop_token_ids must be in [0, {vocabSize}).");
        CheckLogitBias(vocabSize);
    }

    void CheckLogitBias(int vocabSize)
    {
        if (LogitBias is null) return;
        var outOfVocab = LogitBias.Keys.Where(id => id < 0 || id >= vocabSize).Order().ToArray();
        if (outOfVocab.Length > 0)
            throw Bad(nameof(LogitBias), $"token_id(s) [{string.Join(", ", outOfVocab)}] in logit_bias contain out-of-vocab token ids. Vocabulary size: {vocabSize}");
        foreach (var (id, bias) in LogitBias)
            if (!(bias >= -100 && bias <= 100)) throw Bad(nameof(LogitBias), $"logit_bias values must be in [-100, 100], got {bias} for token {id}.");
    }

    static void CheckLogprobs(int? k, string field, int maxLogprobs, int vocabSize)
    {
        if (k is null) return;
        if (k < -1) throw Bad(field, $"{field} must be non-negative or -1 (whole vocabulary), got {k}.");
        int requested = k == -1 ? vocabSize : k.Value;
        int allowed = maxLogprobs == -1 ? vocabSize : maxLogprobs;
        if (requested > allowed) throw Bad(field, $"Requested {field} of {requested}, which is greater than max allowed: {allowed}");
    }

    static ArgumentException Bad(string field, string message) => new(message, field);
}
