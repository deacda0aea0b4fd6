using LoraEngine.Lora;

namespace LoraEngine.Execution;

/// <summary>
/// One sequence's share of a forward step: the tokens it feeds (a prefill chunk or one decode token),
/// where they start, its KV blocks, its adapter's validated host copy (null: the base model; the runner
/// activates it into a GPU slot), and which logits the step must return for it.
/// <paramref name="NeedsLogits"/> false: the sampled row's argmax (computed on the device) is all its sampling needs.
/// </summary>
internal sealed record ExecutionItem(
    IReadOnlyList<int> TokenIds,
    int StartPosition,
    IReadOnlyList<int> BlockTable,
    LoraAdapter? Adapter,
    bool NeedsSample,
    bool NeedsAllLogits,
    bool NeedsLogits = true);

/// <summary>
/// What a step returns for an item: the last token's logits row when its sampling needs it, every row when prompt
/// logprobs are asked, and the argmax of the sampled row (ties: lowest id; −1 when the item samples nothing) with its
/// value (NaN ranks last, so a non-finite value means the row diverged).
/// </summary>
internal sealed record ExecutionResult(float[]? LastLogits, float[]? AllLogits, int ArgmaxToken = -1, float ArgmaxValue = float.NaN);
