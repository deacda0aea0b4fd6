namespace LoraEngine;

/// <summary>A token's log-probability, its rank in the distribution (1 = most likely) and its text.</summary>
public sealed record Logprob(float Value, int? Rank = null, string? DecodedToken = null);

/// <summary>One generated sequence of a request (n &gt; 1 gives several).</summary>
public sealed record CompletionOutput(
    int Index,
    string Text,
    IReadOnlyList<int> TokenIds,
    double? CumulativeLogprob,
    IReadOnlyList<IReadOnlyDictionary<int, Logprob>>? Logprobs,
    string? FinishReason)
{
    /// <summary>
    /// What stopped the sequence, as vLLM's stop_reason: the stop string (a string) or the stop token id (an int);
    /// null when it ended otherwise (EOS, length, abort) or is still running.
    /// </summary>
    public object? StopReason { get; init; }
}

/// <summary>A request's state after a step: cumulative text and tokens so far, Finished on the last one.</summary>
public sealed record RequestOutput(
    string RequestId,
    string? Prompt,
    IReadOnlyList<int> PromptTokenIds,
    IReadOnlyList<IReadOnlyDictionary<int, Logprob>?>? PromptLogprobs,
    IReadOnlyList<CompletionOutput> Outputs,
    bool Finished,
    LoraRequest? LoraRequest)
{
    /// <summary>
    /// Set when the engine failed this request (its outputs then finish with reason "error"): what went wrong, in words
    /// meant for the client. Other requests are not affected unless the engine itself failed (<see cref="LlmEngine.Errored"/>).
    /// </summary>
    public string? Error { get; init; }
}
