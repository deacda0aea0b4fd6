using LoraEngine.Tensors;
using LoraEngine.Tensors.Distributed;

namespace LoraEngine.Lora;

/// <summary>
/// Which share of every adapter a LoRA layer of one tensor-parallel rank holds, as vLLM's layers slice it
/// (<c>slice_lora_a</c> / <c>slice_lora_b</c> in vllm/lora/layers):
/// <list type="bullet">
/// <item>column-parallel (q, k, v, gate, up; ColumnParallelLinearWithLoRA): A whole, B's rows of this rank's outputs;
/// the delta lands in this rank's output columns and needs no exchange.</item>
/// <item>column-parallel, fully sharded (<see cref="FullySharded"/>; ColumnParallelLinearWithShardedLoRA): A's rank
/// rows split too, so each rank computes maxRank / WorldSize of the shrink; the shrink outputs are all-gathered before
/// the expand.</item>
/// <item>row-parallel (o, down; RowParallelLinearWithLoRA): A's columns of this rank's inputs, B whole. Each rank's
/// B·(A_r·x_r) is a partial delta, added to its partial base output, so the layer's one all-reduce adds the delta once.</item>
/// <item>row-parallel, fully sharded (RowParallelLinearWithShardedLoRA, S-LoRA's split): B's rows of this rank's share
/// of the outputs too. The ranks all-reduce their partial shrinks A_r·x_r into the whole shrink, and each rank expands
/// with its rows of B into its own columns of its partial output: after the layer's all-reduce every column holds its
/// delta once, from the rank that owns it.</item>
/// </list>
/// </summary>
/// <param name="Communicator">the rank's group (its rank picks the share)</param>
/// <param name="RowParallel">true for o_proj and down_proj (inputs split), false for the column-parallel projections</param>
/// <param name="FullySharded">vLLM's fully_sharded_loras: column-parallel layers split A by rank rows too, row-parallel ones B by output rows</param>
public sealed record LoraShard(ICommunicator Communicator, bool RowParallel, bool FullySharded)
{
    /// <summary>Whether A is split by rank rows and the shrink outputs gathered (column-parallel and fully sharded).</summary>
    public bool GathersShrink => FullySharded && !RowParallel && Communicator.WorldSize > 1;

    /// <summary>Whether B is split by output rows and the partial shrinks all-reduced (row-parallel and fully sharded).</summary>
    public bool ReducesShrink => FullySharded && RowParallel && Communicator.WorldSize > 1;

    /// <summary>The shard of <paramref name="module"/> for a rank of <paramref name="communicator"/>'s group.</summary>
    public static LoraShard For(LoraModule module, ICommunicator communicator, bool fullySharded) =>
        new(communicator, module.IsRowParallel(), fullySharded);

    /// <summary>Bytes one projection's slots take on one rank (the A and B shares), full (in, out) features given.</summary>
    public static long SlotBytes(LoraModule module, int worldSize, bool fullySharded, int maxSlots, int maxRank, int inFeatures, int outFeatures, DType dtype)
    {
        bool row = module.IsRowParallel();
        long aRows = fullySharded && !row ? maxRank / worldSize : maxRank;
        long aIn = row ? inFeatures / worldSize : inFeatures;
        long bOut = row && !fullySharded ? outFeatures : outFeatures / worldSize;
        return maxSlots * (aRows * aIn + bOut * maxRank) * dtype.Size();
    }
}
