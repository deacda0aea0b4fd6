using LoraEngine.Tensors;

namespace LoraEngine.Models.Llama;

/// <summary>
/// Builds <see cref="StepBatch"/>es into one persistent device buffer: the host packs every index array
/// into one int[] and uploads it with a single copy per step, and the batch's tensors are views of it.
/// </summary>
public sealed class StepBatchBuilder : IDisposable
{
    readonly DeviceTensor _buffer; // [capacity] I32
    readonly int[] _host;

    /// <summary>Allocates the device buffer for the largest step: 5 × maxTokens + maxSequences × maxBlocksPerSequence ints.</summary>
    /// <param name="device">the device the batch tensors live on</param>
    /// <param name="maxTokens">tokens one step may hold</param>
    /// <param name="maxSequences">sequences one step may hold</param>
    /// <param name="maxBlocksPerSequence">width of the block table: KV blocks of the longest sequence</param>
    public StepBatchBuilder(ComputeDevice device, int maxTokens, int maxSequences, int maxBlocksPerSequence)
    {
        MaxTokens = maxTokens;
        MaxSequences = maxSequences;
        MaxBlocksPerSequence = maxBlocksPerSequence;
        int capacity = checked(maxTokens * 5 + maxSequences * maxBlocksPerSequence);
        _host = new int[capacity];
        _buffer = device.Zeros(DType.I32, capacity);
    }

    /// <summary>Tokens one step may hold.</summary>
    public int MaxTokens { get; }

    /// <summary>Sequences one step may hold.</summary>
    public int MaxSequences { get; }

    /// <summary>Width of every block-table row.</summary>
    public int MaxBlocksPerSequence { get; }

    /// <summary>Packs and uploads one step. Block tables are [sequences, MaxBlocksPerSequence], row-major, padded with 0.</summary>
    public StepBatch Build(
        ReadOnlySpan<int> tokenIds,
        ReadOnlySpan<int> positions,
        ReadOnlySpan<int> slotMapping,
        ReadOnlySpan<int> tokenSequence,
        ReadOnlySpan<int> logitRows,
        ReadOnlySpan<int> blockTables,
        int numSequences,
        object? linearContext = null)
    {
        int t = tokenIds.Length;
        if (t == 0 || t > MaxTokens) throw new ArgumentOutOfRangeException(nameof(tokenIds), t, $"a step holds 1..{MaxTokens} tokens");
        if (positions.Length != t) throw new ArgumentException($"{positions.Length} positions for {t} tokens", nameof(positions));
        if (slotMapping.Length != t) throw new ArgumentException($"{slotMapping.Length} slots for {t} tokens", nameof(slotMapping));
        if (tokenSequence.Length != t) throw new ArgumentException($"{tokenSequence.Length} sequence rows for {t} tokens", nameof(tokenSequence));
        if (logitRows.Length == 0 || logitRows.Length > t) throw new ArgumentOutOfRangeException(nameof(logitRows), logitRows.Length, $"1..{t} logit rows");
        if (numSequences <= 0 || numSequences > MaxSequences) throw new ArgumentOutOfRangeException(nameof(numSequences), numSequences, $"1..{MaxSequences} sequences");
        if (blockTables.Length != numSequences * MaxBlocksPerSequence)
            throw new ArgumentException($"block tables must be [{numSequences}, {MaxBlocksPerSequence}]", nameof(blockTables));

        int r = logitRows.Length, bt = blockTables.Length;
        var host = _host.AsSpan();
        tokenIds.CopyTo(host[..t]);
        positions.CopyTo(host.Slice(t, t));
        slotMapping.CopyTo(host.Slice(2 * t, t));
        tokenSequence.CopyTo(host.Slice(3 * t, t));
        logitRows.CopyTo(host.Slice(4 * t, r));
        blockTables.CopyTo(host.Slice(4 * t + r, bt));
        int used = 4 * t + r + bt;
        _buffer.Slice(0, used).CopyFrom<int>(host[..used]);

        return new StepBatch
        {
            NumTokens = t,
            TokenIds = _buffer.Slice(0, t),
            Positions = _buffer.Slice(t, t),
            SlotMapping = _buffer.Slice(2 * t, t),
            TokenSequence = _buffer.Slice(3 * t, t),
            LogitRows = _buffer.Slice(4 * t, r),
            BlockTables = _buffer.Slice(4 * t + r, bt).Reshape(numSequences, MaxBlocksPerSequence),
            LinearContext = linearContext,
        };
    }

    /// <summary>Frees the device buffer; batches built from it must no longer be used.</summary>
    public void Dispose() => _buffer.Dispose();
}
