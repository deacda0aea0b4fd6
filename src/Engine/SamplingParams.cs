namespace LoraEngine;

/// <summary>
/// How to sample a request (vLLM's SamplingParams). Temperature 0 is greedy. Logprobs are log-softmax of the
/// model's raw logits (vLLM's default "raw_logprobs"), before temperature and penalties.
/// </summary>
public sealed record SamplingParams
{
    /// <summary>Number of sequences to generate for the prompt.</summary>
    public int N { get; init; } = 1;
    /// <summary>
    /// Divides the logits before sampling, in [0, 3.4e38] (a 32-bit float); 0 is greedy (argmax). Default 1. As vLLM, a
    /// positive temperature below <see cref="MinPositiveTemperature"/> samples at that: smaller ones overflow the logits.
    /// </summary>
    public double Temperature { get; init; } = 1.0;
    /// <summary>
    /// Samples from the smallest set of tokens whose probabilities add up to this, in (0, 1]; 1: off. Below the smallest
    /// 32-bit float (1.4e−45) it keeps the most likely token alone, as any top_p below that token's probability does.
    /// </summary>
    public double TopP { get; init; } = 1.0;
    /// <summary>0 or -1: off.</summary>
    public int TopK { get; init; }
    /// <summary>Drops tokens less likely than this fraction of the most likely token's probability, in [0, 1]; 0: off.</summary>
    public double MinP { get; init; }
    /// <summary>In [−2, 2]: subtracted once from the logit of every token the sequence has generated; 0: off.</summary>
    public double PresencePenalty { get; init; }
    /// <summary>In [−2, 2]: subtracted from a token's logit once per time the sequence has generated it; 0: off.</summary>
    public double FrequencyPenalty { get; init; }
    /// <summary>
    /// 1: off. Divides positive logits (multiplies negative ones) of tokens in the prompt or output; in [1e−30, 1e30], so
    /// that penalised 32-bit logits stay finite.
    /// </summary>
    public double RepetitionPenalty { get; init; } = 1.0;
    /// <summary>The most tokens to generate per sequence, ≥ 1; null: until EOS, a stop or the context length. Default 16.</summary>
    public int? MaxTokens { get; init; } = 16;
    /// <summary>EOS, stop tokens and stop strings cannot end a sequence before it has this many tokens; ≤ MaxTokens.</summary>
    public int MinTokens { get; init; }
    /// <summary>Keep generating past EOS (until MaxTokens, a stop or the context length).</summary>
    public bool IgnoreEos { get; init; }
    /// <summary>Top logprobs to return per generated token (the sampled one is always included).</summary>
    public int? Logprobs { get; init; }
    /// <summary>Top logprobs to return per prompt token after the first.</summary>
    public int? PromptLogprobs { get; init; }
    /// <summary>Per-request seed: the same seed gives the same tokens whatever else is in the batch.</summary>
    public long? Seed { get; init; }
    /// <summary>Strings that end generation; not included in the output text.</summary>
    public IReadOnlyList<string>? Stop { get; init; }
    /// <summary>Token ids that end a sequence when generated (StopReason then names the id); each in [0, vocab).</summary>
    public IReadOnlyList<int>? StopTokenIds { get; init; }
    /// <summary>Keep the stop string, or the stop token's text, that ended a sequence in its text.</summary>
    public bool IncludeStopStrInOutput { get; init; }
    /// <summary>Leave special tokens (BOS, EOS, ...) out of the output text. Default true.</summary>
    public bool SkipSpecialTokens { get; init; } = true;
    /// <summary>
    /// Token id → bias added to that token's logit before penalties and sampling (OpenAI's logit_bias): −100 all but
    /// bans a token, +100 all but forces it. Values in [−100, 100]; the server clamps as vLLM does.
    /// </summary>
    public IReadOnlyDictionary<int, float>? LogitBias { get; init; }
    /// <summary>
    /// Which outputs the request's steps return (vLLM's output_kind): cumulative (default), deltas, or the final one only.
    /// <c>Llm.Generate</c> asks for the final one only, as vLLM's LLM does, and so do a server's non-streaming requests:
    /// the cumulative kind copies every request's text and tokens so far at every step.
    /// </summary>
    public RequestOutputKind OutputKind { get; init; }

    /// <summary>vLLM's <c>_MAX_TEMP</c>: the smallest positive temperature sampled at (a smaller one is raised to it).</summary>
    public const double MinPositiveTemperature = 0.01;

    /// <summary>The bounds of <see cref="RepetitionPenalty"/>: a logit of up to ±1e8 penalised stays a finite 32-bit float.</summary>
    const double MinRepetitionPenalty = 1e-30, MaxRepetitionPenalty = 1e30;

    /// <summary>
    /// Checks ranges (vLLM's messages); an ArgumentException whose ParamName is the field. The sampler works in 32-bit
    /// floats, so values that would become 0 or infinite there are refused here, per request, never inside a step.
    /// </summary>
    public void Validate(int maxLogprobs, int vocabSize)
    {
        if (N < 1) throw Bad(nameof(N), $"n must be at least 1, got {N}.");
        if (!(Temperature >= 0) || double.IsInfinity(Temperature)) throw Bad(nameof(Temperature), $"temperature must be non-negative, got {Temperature}.");
        if (Temperature > float.MaxValue) throw Bad(nameof(Temperature), $"temperature must be at most {float.MaxValue} (a 32-bit float), got {Temperature}.");
        if (!(TopP > 0 && TopP <= 1)) throw Bad(nameof(TopP), $"top_p must be in (0, 1], got {TopP}.");
        if (TopK < -1) throw Bad(nameof(TopK), $"top_k must be -1 (disable), or at least 1, got {TopK}.");
        if (!(MinP >= 0 && MinP <= 1)) throw Bad(nameof(MinP), $"min_p must be in [0, 1], got {MinP}.");
        if (!(PresencePenalty >= -2 && PresencePenalty <= 2)) throw Bad(nameof(PresencePenalty), $"presence_penalty must be in [-2, 2], got {PresencePenalty}.");
        if (!(FrequencyPenalty >= -2 && FrequencyPenalty <= 2)) throw Bad(nameof(FrequencyPenalty), $"frequency_penalty must be in [-2, 2], got {FrequencyPenalty}.");
        if (!(RepetitionPenalty > 0) || double.IsInfinity(RepetitionPenalty)) throw Bad(nameof(RepetitionPenalty), $"repetition_penalty must be greater than zero, got {RepetitionPenalty}.");
        if (RepetitionPenalty is < MinRepetitionPenalty or > MaxRepetitionPenalty)
            throw Bad(nameof(RepetitionPenalty), $"repetition_penalty must be in [{MinRepetitionPenalty}, {MaxRepetitionPenalty}] (penalised 32-bit logits stay finite), got {RepetitionPenalty}.");
        if (MaxTokens is < 1) throw Bad(nameof(MaxTokens), $"max_tokens must be at least 1, got {MaxTokens}.");
        if (MinTokens < 0) throw Bad(nameof(MinTokens), $"min_tokens must be greater than or equal to 0, got {MinTokens}.");
        if (MaxTokens is int max && MinTokens > max) throw Bad(nameof(MinTokens), $"min_tokens must be less than or equal to max_tokens={max}, got {MinTokens}.");
        CheckLogprobs(Logprobs, nameof(Logprobs), maxLogprobs, vocabSize);
        CheckLogprobs(PromptLogprobs, nameof(PromptLogprobs), maxLogprobs, vocabSize);
        if (Stop?.Any(string.IsNullOrEmpty) == true) throw Bad(nameof(Stop), "stop strings must not be empty.");
        if (StopTokenIds?.Any(id => id < 0 || id >= vocabSize) == true) throw Bad(nameof(StopTokenIds), $"stop_token_ids must be in [0, {vocabSize}).");
        CheckLogitBias(vocabSize);
        if (!Enum.IsDefined(OutputKind)) throw Bad(nameof(OutputKind), $"output_kind must be 0 (cumulative), 1 (delta) or 2 (final only), got {(int)OutputKind}.");
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
        string name = field == nameof(Logprobs) ? "logprobs" : "prompt_logprobs"; // the wire's name, as the other messages use
        if (k < -1) throw Bad(field, $"{name} must be non-negative or -1 (whole vocabulary), got {k}.");
        int requested = k == -1 ? vocabSize : k.Value;
        int allowed = maxLogprobs == -1 ? vocabSize : maxLogprobs;
        if (requested > allowed) throw Bad(field, $"Requested {name} of {requested}, which is greater than max allowed: {allowed}");
    }

    static ArgumentException Bad(string field, string message) => new(message, field);
}
