using LoraEngine.Execution;
using LoraEngine.Lora;
using LoraEngine.Models;
using LoraEngine.Models.Llama;
using LoraEngine.Models.Safetensors;
using LoraEngine.Tensors;

namespace LoraEngine;

/// <summary>
/// How an engine splits device memory: weights, LoRA slots, activations, and the KV blocks that fit in the rest. Under
/// tensor parallelism every figure is rank 0's (its share of the layers, the replicated embedding and the lm_head only
/// it holds); every rank has the same number of KV blocks, each over its own KV heads.
/// </summary>
/// <param name="Device">The device's name.</param>
/// <param name="Available">Bytes the engine may use: the device's memory × GpuMemoryUtilization.</param>
/// <param name="WeightBytes">Bytes of the model's weights in the device dtype.</param>
/// <param name="LoraSlotBytes">Bytes reserved for LoRA slots and their shrink buffer (0 without EnableLora).</param>
/// <param name="ActivationBytes">Bytes of the step's activation and metadata buffers.</param>
/// <param name="BytesPerKvBlock">Bytes one KV block takes over all layers (K and V).</param>
/// <param name="KvBlocks">KV blocks allocated (at least one max-length sequence's worth).</param>
public sealed record MemoryPlan(
    string Device,
    long Available,
    long WeightBytes,
    long LoraSlotBytes,
    long ActivationBytes,
    long BytesPerKvBlock,
    int KvBlocks)
{
    /// <summary>Tensor-parallel ranks the plan is one of (1: a single device).</summary>
    public int TensorParallelSize { get; init; } = 1;

    /// <summary>Bytes of the KV cache: <see cref="BytesPerKvBlock"/> × <see cref="KvBlocks"/>.</summary>
    public long KvCacheBytes => BytesPerKvBlock * KvBlocks;

    /// <summary>
    /// Plans memory for a config; throws InvalidOperationException naming what was needed and what is available when
    /// weights + LoRA slots + activations + one max-length sequence of KV do not fit.
    /// </summary>
    internal static MemoryPlan Create(EngineConfig config, ComputeDevice device, SafetensorsCheckpoint checkpoint, DType weightDType, DType loraDType)
    {
        var args = config.Args;
        int ranks = args.TensorParallelSize;
        var shard = config.ModelConfig.ShardFor(ranks);
        // A layer's projections are split over the ranks; the embedding, the norms and lm_head are whole on rank 0.
        long weights = checkpoint.Names.Sum(n => checkpoint.Info(n).ElementCount / (n.Contains(".layers.") && n.EndsWith("_proj.weight") ? ranks : 1)) * weightDType.Size();
        long lora = args.EnableLora
            ? LoraLayers.MemoryBytes(config.ModelConfig, args.MaxLoras, args.MaxLoraRank, loraDType, config.MaxNumBatchedTokens, ranks, args.FullyShardedLoras)
            : 0;
        long activations = ModelExecutor.ActivationBytes(device, shard, config.MaxNumBatchedTokens, config.MaxModelLen, config.Args.BlockSize);
        long perBlock = PagedKvCache.BytesPerBlock(shard, args.BlockSize);
        int minBlocks = BlockCountFor(config.MaxModelLen, args.BlockSize);
        int maxUseful = (int)Math.Min(int.MaxValue, (long)args.MaxNumSeqs * minBlocks + 1);

        // CPU ranks share the host's memory and its KV budget.
        long available = (long)(device.MemorySize * args.GpuMemoryUtilization) / (device.IsCpu ? ranks : 1);
        long free = available - weights - lora - activations;
        long kvBudget = device.IsCpu ? Math.Min(free, args.CpuKvCacheBytes / ranks) : free;
        if (args.NumGpuBlocksOverride is int fixedBlocks && fixedBlocks < minBlocks)
            throw new ArgumentOutOfRangeException(nameof(args.NumGpuBlocksOverride), fixedBlocks,
                $"NumGpuBlocksOverride ({fixedBlocks}) is fewer than the {minBlocks} blocks of {args.BlockSize} tokens one MaxModelLen ({config.MaxModelLen}) sequence needs");
        int blocks = args.NumGpuBlocksOverride ?? (int)Math.Clamp(kvBudget / perBlock, 0, maxUseful);
        long needed = weights + lora + activations + (long)Math.Max(blocks, minBlocks) * perBlock;
        if (blocks < minBlocks || needed > available)
            throw new InvalidOperationException(
                $"not enough memory on {device}: needed {Mb(weights + lora + activations + (long)minBlocks * perBlock)} " +
                $"(weights {Mb(weights)}, LoRA slots {Mb(lora)}, activations {Mb(activations)}, KV cache for one {config.MaxModelLen}-token sequence " +
                $"{Mb((long)minBlocks * perBlock)}) but {Mb(available)} is available ({args.GpuMemoryUtilization:P0} of {Mb(device.MemorySize)}). " +
                "Lower MaxModelLen, MaxNumBatchedTokens, MaxLoras or MaxLoraRank, or raise GpuMemoryUtilization.");
        return new MemoryPlan(device.ToString(), available, weights, lora, activations, perBlock, blocks) { TensorParallelSize = ranks };
    }

    static int BlockCountFor(int tokens, int blockSize) => (tokens + blockSize - 1) / blockSize;

    static string Mb(long bytes) => $"{bytes / (1024.0 * 1024.0):F1} MiB";

    /// <summary>One line for the log: every part in MiB.</summary>
    public override string ToString() =>
        $"{Device}{(TensorParallelSize > 1 ? $" (rank 0 of {TensorParallelSize})" : "")}: available {Mb(Available)}; weights {Mb(WeightBytes)}, LoRA slots {Mb(LoraSlotBytes)}, activations {Mb(ActivationBytes)}, " +
        $"KV cache {KvBlocks} blocks × {Mb(BytesPerKvBlock)} = {Mb(KvCacheBytes)}";
}
