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

    /// <summary>Every wrapped projection, by (layer, module).</summary>
    public IReadOnlyDictionary<(int Layer, LoraModule Module), LoraLinear> Layers => _layers;

    /// <summary>
    /// Bytes reserved for LoRA slots: Σ over layers and wrapped modules of maxSlots × maxRank × (in + out) × dtype size,
    /// plus the shared shrink buffer 3 × maxTokens × maxRank × 4 (<see cref="LoraOps.MaxGroup"/> projections' shrinks at once).
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
        return perLayer * config.NumHiddenLayers + 4L * LoraOps.MaxGroup * maxTokens * maxRank + (localShrink ? 4L * maxTokens * (maxRank / worldSize) : 0);
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
        var shrink = model.Device.Zeros(DType.F32, LoraOps.MaxGroup * maxTokens, maxRank);
        var localShrink = parallel && fullyShardedLoras ? model.Device.Zeros(DType.F32, maxTokens, maxRank / ranks) : null;
        var layers = new LoraLayers(shrink, localShrink, maxSlots, maxRank, dtype);
        try
        {
            model.WrapProjections((layer, name, linear) =>
            {
                var module = LoraModules.FromHfName(name);
                var shard = parallel ? LoraShard.For(module, communicator, fullyShardedLoras) : null;
                var wrapped = new LoraLinear(linear, maxSlots, maxRank, dtype, model.Device, shrink, shard, localShrink);
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
            layer.A.Dispose();
            layer.B.Dispose();
        }
        _shrinkBuffer.Dispose();
        _localShrinkBuffer?.Dispose();
    }
}
