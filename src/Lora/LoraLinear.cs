using LoraEngine.Models.Llama;
using LoraEngine.Tensors;

namespace LoraEngine.Lora;

/// <summary>
/// Wraps a base linear and adds each token's adapter delta: y = W·x, then y[t] += B_s·(A_s·x[t]) with
/// s = slot[t] (-1: none) and the scale folded into B_s. Owns slot-stacked A [slots, maxRank, in] and
/// B [slots, out, maxRank], allocated once and zeroed (vLLM's create_lora_weights / set_lora / reset_lora / apply).
/// </summary>
public sealed class LoraLinear : ILinear, IDisposable
{
    readonly DeviceTensor _shrinkBuffer; // [maxTokens, maxRank] F32, shared by all LoRA layers of a model

    /// <summary>Wraps <paramref name="baseLayer"/> and allocates its zeroed slots (vLLM's create_lora_weights).</summary>
    /// <param name="baseLayer">the projection wrapped; its InFeatures and OutFeatures size the slots</param>
    /// <param name="maxSlots">slots (positive)</param>
    /// <param name="maxRank">the largest rank a slot holds (positive)</param>
    /// <param name="loraDType">F32, F16 or BF16: the dtype A and B are stored in</param>
    /// <param name="device">the device the slots live on</param>
    /// <param name="shrinkBuffer">[maxTokens, maxRank] F32 scratch for A·x, shared by every LoRA layer of a model</param>
    public LoraLinear(ILinear baseLayer, int maxSlots, int maxRank, DType loraDType, ComputeDevice device, DeviceTensor shrinkBuffer)
    {
        ArgumentNullException.ThrowIfNull(baseLayer);
        if (maxSlots <= 0) throw new ArgumentOutOfRangeException(nameof(maxSlots), maxSlots, "must be positive");
        if (maxRank <= 0) throw new ArgumentOutOfRangeException(nameof(maxRank), maxRank, "must be positive");
        if (!loraDType.IsFloat()) throw new ArgumentException($"LoRA dtype must be a float type, got {loraDType}", nameof(loraDType));
        Base = baseLayer;
        MaxSlots = maxSlots;
        MaxRank = maxRank;
        _shrinkBuffer = shrinkBuffer;
        A = device.Zeros(loraDType, maxSlots, maxRank, baseLayer.InFeatures);
        try
        {
            B = device.Zeros(loraDType, maxSlots, baseLayer.OutFeatures, maxRank);
        }
        catch
        {
            A.Dispose();
            throw;
        }
    }

    /// <summary>The wrapped projection (vLLM's base_layer).</summary>
    public ILinear Base { get; }

    /// <summary>Slots A and B hold.</summary>
    public int MaxSlots { get; }

    /// <summary>Rank rows (A) and columns (B) of every slot.</summary>
    public int MaxRank { get; }

    /// <summary>[slots, maxRank, in] LoRA A of every slot, rank rows past the adapter's rank are zero.</summary>
    public DeviceTensor A { get; }

    /// <summary>[slots, out, maxRank] scale·B of every slot, rank columns past the adapter's rank are zero.</summary>
    public DeviceTensor B { get; }

    /// <inheritdoc/>
    public int InFeatures => Base.InFeatures;

    /// <inheritdoc/>
    public int OutFeatures => Base.OutFeatures;

    /// <summary>Bytes of the slot buffers of one projection: slots × maxRank × (in + out) × dtype size.</summary>
    public static long SlotBytes(int maxSlots, int maxRank, int inFeatures, int outFeatures, DType dtype) =>
        (long)maxSlots * maxRank * (inFeatures + outFeatures) * dtype.Size();

    /// <summary>
    /// Copies an adapter's weights into <paramref name="slot"/>: A [rank, in] padded to maxRank rows,
    /// B [out, rank] scaled by <paramref name="scale"/> and padded to maxRank columns.
    /// </summary>
    public void SetSlot(int slot, int rank, float scale, ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        CheckSlot(slot);
        if (rank <= 0 || rank > MaxRank) throw new ArgumentOutOfRangeException(nameof(rank), rank, $"rank must be in 1..{MaxRank}");
        if (a.Length != rank * InFeatures) throw new ArgumentException($"A holds {a.Length} values, expected [{rank}, {InFeatures}]", nameof(a));
        if (b.Length != OutFeatures * rank) throw new ArgumentException($"B holds {b.Length} values, expected [{OutFeatures}, {rank}]", nameof(b));

        var paddedA = new float[MaxRank * InFeatures];
        a.CopyTo(paddedA);
        var paddedB = new float[OutFeatures * MaxRank];
        for (int o = 0; o < OutFeatures; o++)
            for (int r = 0; r < rank; r++)
                paddedB[o * MaxRank + r] = scale * b[o * rank + r];
        Upload(A.Slice(slot, 1), paddedA);
        Upload(B.Slice(slot, 1), paddedB);
    }

    /// <summary>Zeroes a slot: tokens mapped to it get no delta from this projection.</summary>
    public void ResetSlot(int slot)
    {
        CheckSlot(slot);
        A.Slice(slot, 1).Clear();
        B.Slice(slot, 1).Clear();
    }

    /// <summary>y = base(x), then each token's adapter delta (<see cref="AddDelta"/>).</summary>
    /// <inheritdoc cref="ILinear.Forward"/>
    public void Forward(DeviceTensor y, DeviceTensor x, StepBatch batch)
    {
        Base.Forward(y, x, batch);
        AddDelta(y, x, batch);
    }

    /// <summary>The wrapped projection's base weight: a fused launch computes W·x, then <see cref="AddDelta"/> adds the adapters.</summary>
    public DeviceTensor BaseWeight => Base.BaseWeight;

    /// <summary>y[t] += B_s·(A_s·x[t]), s = slot[t] (after the base layer's own delta, if it has one).</summary>
    public void AddDelta(DeviceTensor y, DeviceTensor x, StepBatch batch)
    {
        Base.AddDelta(y, x, batch);
        if (batch.LinearContext is not LoraBatchMapping { AnyAdapter: true } mapping) return;
        var buffer = _shrinkBuffer.Slice(0, batch.NumTokens);
        var device = y.Device;
        device.Lora.Shrink(buffer, x, A, mapping.TokenSlots);
        device.Lora.Expand(y, buffer, B, mapping.TokenSlots);
    }

    static void Upload(DeviceTensor slotView, float[] values)
    {
        if (slotView.DType == DType.F32) slotView.CopyFrom<float>(values);
        else slotView.CopyFrom<ushort>(HalfBits.FromFloat(slotView.DType, values));
    }

    void CheckSlot(int slot)
    {
        if (slot < 0 || slot >= MaxSlots) throw new ArgumentOutOfRangeException(nameof(slot), slot, $"slot must be in 0..{MaxSlots - 1}");
    }

    /// <summary>Frees the slots and the wrapped projection.</summary>
    public void Dispose()
    {
        A.Dispose();
        B.Dispose();
        (Base as IDisposable)?.Dispose();
    }
}
