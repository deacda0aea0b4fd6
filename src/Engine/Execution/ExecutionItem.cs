using LoraEngine.Lora;
using LoraEngine.Tensors.Kernels;

namespace LoraEngine.Execution;

/// <summary>
/// One sequence's share of a forward step: the tokens it feeds (a prefill chunk or one decode token), where they
/// start, its KV blocks, its adapter's validated host copy (null: the base model; the runner activates it into a GPU
/// slot), how its last row is sampled (null: the chunk samples nothing) and which of its rows are scored for prompt
/// logprobs.
/// </summary>
internal sealed record ExecutionItem(
    IReadOnlyList<int> TokenIds,
    int StartPosition,
    IReadOnlyList<int> BlockTable,
    LoraAdapter? Adapter,
    RowSampling? Sampling,
    PromptScoring? Scoring = null)
{
    public bool NeedsSample => Sampling != null;
}

/// <summary>How the chunk's last row becomes the next token, on the device.</summary>
/// <param name="Row">the kernels' parameters (<c>Row.Edits == Edits.Count</c>)</param>
/// <param name="Edits">the logit edits: bias, bans, penalties, one per distinct token</param>
/// <param name="RawLogits">the raw logits row comes back too: logprobs beyond what the device returns (the whole vocabulary)</param>
internal sealed record RowSampling(SampleRow Row, IReadOnlyList<TokenEdit> Edits, bool RawLogits = false);

/// <summary>Prompt logprobs for a chunk's rows.</summary>
/// <param name="Targets">the prompt token row i predicts (−1: none)</param>
/// <param name="TopN">top entries wanted beside each target</param>
/// <param name="RawLogits">the chunk's raw logits come back instead (a top-n beyond the device's, or the whole vocabulary)</param>
internal sealed record PromptScoring(IReadOnlyList<int> Targets, int TopN, bool RawLogits = false);

/// <summary>A row's outcome: its token (sampled, or the scored target), whether its logits were finite, its logprobs when asked.</summary>
internal sealed record RowOutcome(int Token, bool Finite, RowLogprobs? Logprobs = null);

/// <summary>Log-softmax of a row's raw logits at its token (with the token's rank), and the row's top n ids in order with theirs.</summary>
internal sealed record RowLogprobs(float Logprob, int Rank, int[] TopIds, float[] TopLogprobs);

/// <summary>
/// What a step returns for an item: the sampled row's outcome (null when it samples nothing), the outcome of each
/// scored prompt row (null where there is no target), and raw logits where the item asked for them.
/// </summary>
internal sealed record ExecutionResult(RowOutcome? Sampled, IReadOnlyList<RowOutcome?>? Prompt = null, float[]? LastLogits = null, float[]? AllLogits = null);
