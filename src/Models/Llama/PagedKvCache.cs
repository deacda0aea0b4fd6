using LoraEngine.Tensors;

namespace LoraEngine.Models.Llama;

/// <summary>
/// The paged KV cache of every layer: K and V of [numBlocks, blockSize, numKvHeads, headDim] F32 per layer.
/// Which blocks belong to which sequence is the engine's business (its block allocator and the step's block tables).
/// </summary>
public sealed class PagedKvCache : IDisposable
{
    readonly DeviceTensor[] _keys;
    readonly DeviceTensor[] _values;

    /// <summary>Allocates (zeroed) the K and V blocks of every layer.</summary>
    /// <param name="device">the device the cache lives on</param>
    /// <param name="config">the model: layers, kv heads and head_dim size the blocks</param>
    /// <param name="numBlocks">blocks per layer (positive)</param>
    /// <param name="blockSize">token positions per block (positive)</param>
    /// <exception cref="ArgumentOutOfRangeException">numBlocks or blockSize is not positive.</exception>
    public PagedKvCache(ComputeDevice device, LlamaConfig config, int numBlocks, int blockSize)
    {
        if (numBlocks <= 0) throw new ArgumentOutOfRangeException(nameof(numBlocks), numBlocks, "at least one KV block is needed");
        if (blockSize <= 0) throw new ArgumentOutOfRangeException(nameof(blockSize), blockSize, "block size must be positive");
        NumBlocks = numBlocks;
        BlockSize = blockSize;
        _keys = new DeviceTensor[config.NumHiddenLayers];
        _values = new DeviceTensor[config.NumHiddenLayers];
        try
        {
            for (int l = 0; l < config.NumHiddenLayers; l++)
            {
                _keys[l] = device.Zeros(DType.F32, numBlocks, blockSize, config.NumKeyValueHeads, config.HeadDim);
                _values[l] = device.Zeros(DType.F32, numBlocks, blockSize, config.NumKeyValueHeads, config.HeadDim);
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>Blocks per layer.</summary>
    public int NumBlocks { get; }

    /// <summary>Token positions per block.</summary>
    public int BlockSize { get; }

    /// <summary>Bytes one block takes over all layers (K and V).</summary>
    public static long BytesPerBlock(LlamaConfig config, int blockSize) =>
        2L * config.NumHiddenLayers * blockSize * config.NumKeyValueHeads * config.HeadDim * sizeof(float);

    /// <summary>[numBlocks, blockSize, numKvHeads, headDim] F32: the keys of layer <paramref name="layer"/>.</summary>
    public DeviceTensor Keys(int layer) => _keys[layer];

    /// <summary>[numBlocks, blockSize, numKvHeads, headDim] F32: the values of layer <paramref name="layer"/>.</summary>
    public DeviceTensor Values(int layer) => _values[layer];

    /// <summary>Frees every layer's blocks.</summary>
    public void Dispose()
    {
        foreach (var t in _keys) t?.Dispose();
        foreach (var t in _values) t?.Dispose();
    }
}
