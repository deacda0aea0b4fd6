using LoraEngine.Models;
using LoraEngine.Models.Llama;
using LoraEngine.Tensors;

namespace LoraEngine.Lora;

/// <summary>
/// Every LoRA-wrapped projection of a model, by (layer, module), and the shrink buffer they share.
/// Built once at engine start (all slot memory reserved up front), then slots are filled and reset.
/// </summary>
public sealed class LoraLayers : IDisposable
{
    readonly Dictionary<(int Layer, LoraModule Module), LoraLinear> _layers = new();
    readonly DeviceTensor _shrinkBuffer;

    LoraLayers(DeviceTensor shrinkBuffer, int maxSlots, int maxRank, DType dtype)
    {
        _shrinkBuffer = shrinkBuffer;
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
    /// plus the shared shrink buffer maxTokens × maxRank × 4.
    /// </summary>
    public static long MemoryBytes(LlamaConfig config, int maxSlots, int maxRank, DType dtype, int maxTokens)
    {
        long perLayer = 0;
        foreach (var module in Enum.GetValues<LoraModule>())
        {
            var (inF, outF) = module.Features(config);
            perLayer += LoraLinear.SlotBytes(maxSlots, maxRank, inF, outF, dtype);
        }
        return perLayer * config.NumHiddenLayers + 4L * maxTokens * maxRank;
    }

    /// <summary>Wraps all seven projections of every layer of <paramref name="model"/> in LoRA layers.</summary>
    public static LoraLayers Wrap(LlamaModel model, int maxSlots, int maxRank, DType dtype, int maxTokens)
    {
        var shrink = model.Device.Zeros(DType.F32, maxTokens, maxRank);
        var layers = new LoraLayers(shrink, maxSlots, maxRank, dtype);
        try
        {
            model.WrapProjections((layer, name, linear) =>
            {
                var wrapped = new LoraLinear(linear, maxSlots, maxRank, dtype, model.Device, shrink);
                layers._layers[(layer, LoraModules.FromHfName(name))] = wrapped;
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
    }
}
