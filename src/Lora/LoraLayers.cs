using LoraEngine.Models;
using LoraEngine.Models.Llama;
using LoraEngine.Tensors;
using LoraEngine.Tensors.Kernels;

namespace LoraEngine.Lora;

/// <summary>
/// Every LoRA-wrapped projection of a model, by (layer, module), and the shrink buffer they share
/// ([<see cref="LoraOps.MaxGroup"/> × maxTokens, maxRank]: room for q/k/v's shrinks side by side).
/// Built once at engine start (all slot memory reserved up front), then slots are filled and reset.
/// </summary>
public sealed class LoraLayers : IDisposable
{
    readonly Dictionary<(int Layer, LoraModule Module), LoraLinear> _layers = new();
    readonly DeviceTensor _shrinkBuffer;
    readonly DeviceTensor? _localShrinkBuffer;
    readonly List<StackedLoraA> _stacks = [];

    LoraLayers(DeviceTensor shrinkBuffer, DeviceTensor? localShrinkBuffer, int maxSlots, int maxRank, DType dtype)
    {
        _shrinkBuffer = shrinkBuffer;
        _localShrinkBuffer = localShrinkBuffer;
        MaxSlots = maxSlots;
        MaxRank = maxRank;
        DType = dtype;
    }

    /// <summary>GPU slots per projection (vLLM's max_loras): adapters one step can use.</summary>
    public int MaxSlots { get; }

    /// <summary>The largest adapter rank a slot holds (vLLM's max_lora_rank).</summary>
    public int MaxRank { get; }

    /// <summary>The dtype the slots store A and B in.</summary>
    public DType DType { get; }

    /// <summary>
    /// Whether the projections' A are stacked (<see cref="StackedLoraA"/>): each shrink is one more product of the base
    /// linears' launch, computed for every slot.
    /// </summary>
    public bool StacksShrinks => _stacks.Count > 0;

    /// <summary>
    /// Whether a model's LoRA A are stacked: on one device (no tensor parallelism), A in the base weights' dtype (one
    /// launch computes both), and every slot's rank rows at most an eighth of the narrowest input — the rows a token does
    /// not need stay a small part of the linear it rides with (4 slots of rank 16 on the 1B shape's hidden 2048: 64 of
    /// 256 allowed). A step with no adapter computes none of them.
    /// </summary>
    public static bool Stacks(LlamaConfig config, int maxSlots, int maxRank, DType loraDType, DType weightDType, int worldSize) =>
        worldSize == 1 && loraDType == weightDType && (long)maxSlots * maxRank * 8 <= Math.Min(config.HiddenSize, Math.Min(config.QSize, config.IntermediateSize));

    /// <summary>Every wrapped projection, by (layer, module).</summary>
    public IReadOnlyDictionary<(int Layer, LoraModule Module), LoraLinear> Layers => _layers;

    /// <summary>
    /// Bytes reserved for LoRA slots: Σ over layers and wrapped modules of maxSlots × maxRank × (in + out) × dtype size,
    /// plus the shared shrink buffer 3 × maxTokens × maxRank × 4 (<see cref="LoraOps.MaxGroup"/> projections' shrinks at
    /// once), maxSlots times that where the shrinks may be stacked (<see cref="Stacks"/>, counted whatever the weights' dtype).
    /// </summary>
    public static long MemoryBytes(LlamaConfig config, int maxSlots, int maxRank, DType dtype, int maxTokens) =>
        MemoryBytes(config, maxSlots, maxRank, dtype, maxTokens, worldSize: 1, fullySharded: false);

    /// <summary>
    /// Bytes one of <paramref name="worldSize"/> tensor-parallel ranks reserves for LoRA slots: its share of every
    /// projection's slots (<see cref="LoraShard.SlotBytes"/>; the whole slots on one device), the shrink buffer and,
    /// fully sharded over several ranks, its local shrink buffer.
    /// </summary>
    public static long MemoryBytes(LlamaConfig config, int maxSlots, int maxRank, DType dtype, int maxTokens, int worldSize, bool fullySharded)
    {
        long perLayer = 0;
        foreach (var module in Enum.GetValues<LoraModule>())
        {
            var (inF, outF) = module.Features(config);
            perLayer += LoraShard.SlotBytes(module, worldSize, fullySharded, maxSlots, maxRank, inF, outF, dtype);
        }
        bool localShrink = fullySharded && worldSize > 1;
        int shrinkSlots = Stacks(config, maxSlots, maxRank, DType.F32, DType.F32, worldSize) ? maxSlots : 1;
        return perLayer * config.NumHiddenLayers + 4L * LoraOps.MaxGroup * maxTokens * shrinkSlots * maxRank
            + (localShrink ? 4L * maxTokens * (maxRank / worldSize) : 0);
    }

    /// <summary>Wraps all seven projections of every layer of <paramref name="model"/> in LoRA layers.</summary>
    public static LoraLayers Wrap(LlamaModel model, int maxSlots, int maxRank, DType dtype, int maxTokens) =>
        Wrap(model, maxSlots, maxRank, dtype, maxTokens, fullyShardedLoras: false);

    /// <summary>
    /// Wraps all seven projections of every layer of <paramref name="model"/> — one tensor-parallel rank's share of them
    /// when its <see cref="LlamaModel.Communicator"/> has several ranks — in LoRA layers holding that rank's share of
    /// each adapter (<see cref="LoraShard"/>); <paramref name="fullyShardedLoras"/> is vLLM's fully_sharded_loras.
    /// </summary>
    public static LoraLayers Wrap(LlamaModel model, int maxSlots, int maxRank, DType dtype, int maxTokens, bool fullyShardedLoras)
    {
        var communicator = model.Communicator;
        int ranks = communicator.WorldSize;
        bool parallel = ranks > 1;
        if (parallel && fullyShardedLoras && maxRank % ranks != 0)
            throw new ArgumentOutOfRangeException(nameof(maxRank), maxRank,
                $"fully sharded LoRA splits max_lora_rank ({maxRank}) over the {ranks} tensor-parallel ranks: it must be a multiple of {ranks}");
        if (parallel && fullyShardedLoras && model.Config.HiddenSize % ranks != 0)
            throw new ArgumentException(
                $"fully sharded LoRA splits the output rows of o_proj's and down_proj's B over the {ranks} tensor-parallel ranks: hidden_size ({model.Config.HiddenSize}) must be a multiple of {ranks}",
                nameof(model));
        bool stacks = Stacks(model.Config, maxSlots, maxRank, dtype, model.Layers[0].QProj.BaseWeight.DType, ranks);
        // Stacked shrinks take a row of every slot's columns a token: room for MaxGroup linears of maxTokens.
        var shrink = model.Device.Zeros(DType.F32, checked(LoraOps.MaxGroup * maxTokens * (stacks ? maxSlots : 1)), maxRank);
        var localShrink = parallel && fullyShardedLoras ? model.Device.Zeros(DType.F32, maxTokens, maxRank / ranks) : null;
        var layers = new LoraLayers(shrink, localShrink, maxSlots, maxRank, dtype);
        StackedLoraA? stack = null;
        try
        {
            model.WrapProjections((layer, name, linear) =>
            {
                var module = LoraModules.FromHfName(name);
                var shard = parallel ? LoraShard.For(module, communicator, fullyShardedLoras) : null;
                LoraLinear wrapped;
                if (stacks)
                {
                    // q/k/v share one stack, gate/up another; o and down each their own (the projections come in that order).
                    int member = module switch { LoraModule.KProj or LoraModule.UpProj => 1, LoraModule.VProj => 2, _ => 0 };
                    if (member == 0)
                    {
                        int members = module switch { LoraModule.QProj => 3, LoraModule.GateProj => 2, _ => 1 };
                        stack = StackedLoraA.Allocate(model.Device, dtype, members, maxSlots, maxRank, linear.InFeatures);
                        layers._stacks.Add(stack);
                    }
                    wrapped = new LoraLinear(linear, maxSlots, maxRank, dtype, model.Device, shrink, stack!, member);
                }
                else wrapped = new LoraLinear(linear, maxSlots, maxRank, dtype, model.Device, shrink, shard, localShrink);
                layers._layers[(layer, module)] = wrapped;
                return wrapped;
            });
        }
        catch
        {
            layers.Dispose();
            throw;
        }
        return layers;
    }

    /// <summary>Copies an adapter into a slot; projections the adapter does not target get a zeroed slot.</summary>
    public void SetSlot(int slot, LoraAdapter adapter)
    {
        var byKey = adapter.Weights.ToDictionary(w => (w.Layer, w.Module));
        foreach (var (key, layer) in _layers)
        {
            if (byKey.TryGetValue(key, out var w)) layer.SetSlot(slot, w.Rank, w.Scale, w.A, w.B);
            else layer.ResetSlot(slot);
        }
    }

    /// <summary>Zeroes <paramref name="slot"/> in every projection: tokens mapped to it get no delta.</summary>
    public void ResetSlot(int slot)
    {
        foreach (var layer in _layers.Values) layer.ResetSlot(slot);
    }

    /// <summary>Slot buffers only (not the base weights, which the model owns).</summary>
    public void Dispose()
    {
        foreach (var layer in _layers.Values)
        {
            layer.A.Dispose(); // a stacked A is a view: its stack frees it
            layer.B.Dispose();
        }
        foreach (var stack in _stacks) stack.Dispose();
        _shrinkBuffer.Dispose();
        _localShrinkBuffer?.Dispose();
    }
}
