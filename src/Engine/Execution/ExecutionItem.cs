using LoraEngine.Lora;

namespace LoraEngine.Execution;

/// <summary>
/// One sequence's share of a forward step: the tokens it feeds (a prefill chunk or one decode token),
/// where they start, its KV blocks, its adapter's validated host copy (null: the base model; the runner
/// activates it into a GPU slot), and which logits the step must return for it.
/// </summary>
internal sealed record ExecutionItem(
    IReadOnlyList<int> TokenIds,
    int StartPosition,
    IReadOnlyList<int> BlockTable,
    LoraAdapter? Adapter,
    bool NeedsSample,
    bool NeedsAllLogits);

/// <summary>Logits returned for an item: the last token's row when sampling, every row when prompt logprobs are asked.</summary>
internal sealed record ExecutionResult(float[]? LastLogits, float[]? AllLogits);
