using LoraEngine.Tensors;

namespace LoraEngine.Models.Llama;

/// <summary>
/// The tokens of one forward step and where their keys and values live, already on the device. Tokens of
/// several sequences (prefill chunks and decodes alike) are packed one after another.
/// </summary>
public sealed class StepBatch
{
    /// <summary>Number of tokens in the step (T).</summary>
    public required int NumTokens { get; init; }

    /// <summary>[T] I32 input token ids.</summary>
    public required DeviceTensor TokenIds { get; init; }

    /// <summary>[T] I32 position of each token in its sequence.</summary>
    public required DeviceTensor Positions { get; init; }

    /// <summary>[T] I32 KV-cache slot (block * blockSize + offset) each token's key and value are written to.</summary>
    public required DeviceTensor SlotMapping { get; init; }

    /// <summary>[T] I32 row of <see cref="BlockTables"/> holding each token's sequence.</summary>
    public required DeviceTensor TokenSequence { get; init; }

    /// <summary>[S, maxBlocksPerSequence] I32 physical KV blocks of each sequence in the step.</summary>
    public required DeviceTensor BlockTables { get; init; }

    /// <summary>[R] I32 token rows whose final hidden state (and so logits) the step needs.</summary>
    public required DeviceTensor LogitRows { get; init; }

    /// <summary>Opaque per-step data for wrapped linears (e.g. LoRA's token → slot map); the model never reads it.</summary>
    public object? LinearContext { get; init; }
}
