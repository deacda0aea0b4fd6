namespace LoraEngine;

/// <summary>
/// Which outputs a request's steps return (vLLM's RequestOutputKind): every step's whole output so far, only what each
/// step added, or nothing until the request finishes.
/// </summary>
public enum RequestOutputKind
{
    /// <summary>Each output holds everything so far: the whole text, every token id and logprob (the default).</summary>
    Cumulative = 0,

    /// <summary>
    /// Each output holds what is new since the request's previous one: text, token ids, logprobs, and the prompt
    /// logprobs of the prefill chunks computed since (none once the prompt is done). CumulativeLogprob and FinishReason
    /// are those of the sequence so far. A step that added nothing returns no output.
    /// </summary>
    Delta = 1,

    /// <summary>Only the final output, when the request finishes (failed and aborted requests included).</summary>
    FinalOnly = 2,
}
