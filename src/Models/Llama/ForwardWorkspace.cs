using LoraEngine.Tensors;
using LoraEngine.Tensors.Kernels;

namespace LoraEngine.Models.Llama;

/// <summary>Activation buffers for up to <see cref="MaxTokens"/> tokens, allocated once; a step uses row slices.</summary>
public sealed class ForwardWorkspace : IDisposable
{
    /// <summary>Allocates every buffer (F32) and uploads the RoPE cos/sin table.</summary>
    /// <param name="device">the device the buffers live on</param>
    /// <param name="config">the model whose widths size the buffers</param>
    /// <param name="maxTokens">tokens one step may hold (positive)</param>
    /// <param name="maxPositions">positions the RoPE table covers (default: the model's max_position_embeddings)</param>
    public ForwardWorkspace(ComputeDevice device, LlamaConfig config, int maxTokens, int? maxPositions = null)
    {
        if (maxTokens <= 0) throw new ArgumentOutOfRangeException(nameof(maxTokens), maxTokens, "must be positive");
        MaxTokens = maxTokens;
        var invFreq = RopeFrequencies.InverseFrequencies(config.HeadDim, config.RopeTheta, config.RopeScaling);
        int positions = maxPositions ?? config.MaxPositionEmbeddings;
        RopeCosSin = device.Upload(RopeOps.CosSinTable(invFreq, positions), positions, config.HeadDim / 2, 2);
        Hidden = device.Zeros(DType.F32, maxTokens, config.HiddenSize);
        Normed = device.Zeros(DType.F32, maxTokens, config.HiddenSize);
        Q = device.Zeros(DType.F32, maxTokens, config.QSize);
        K = device.Zeros(DType.F32, maxTokens, config.KvSize);
        V = device.Zeros(DType.F32, maxTokens, config.KvSize);
        Attention = device.Zeros(DType.F32, maxTokens, config.QSize);
        Out = device.Zeros(DType.F32, maxTokens, config.HiddenSize);
        Gate = device.Zeros(DType.F32, maxTokens, config.IntermediateSize);
        Up = device.Zeros(DType.F32, maxTokens, config.IntermediateSize);
        FinalHidden = device.Zeros(DType.F32, maxTokens, config.HiddenSize);
    }

    /// <summary>Tokens one step may hold (T ≤ MaxTokens).</summary>
    public int MaxTokens { get; }
    /// <summary>[T, hidden] the residual stream.</summary>
    public DeviceTensor Hidden { get; }
    /// <summary>[T, hidden] the RMSNorm of the residual (the projections' input).</summary>
    public DeviceTensor Normed { get; }
    /// <summary>[T, heads*headDim] queries.</summary>
    public DeviceTensor Q { get; }
    /// <summary>[T, kvHeads*headDim] keys, before they are written to the KV cache.</summary>
    public DeviceTensor K { get; }
    /// <summary>[T, kvHeads*headDim] values, before they are written to the KV cache.</summary>
    public DeviceTensor V { get; }
    /// <summary>[T, heads*headDim] attention output, o_proj's input.</summary>
    public DeviceTensor Attention { get; }
    /// <summary>[T, hidden] o_proj's and down_proj's output, added to the residual.</summary>
    public DeviceTensor Out { get; }
    /// <summary>[T, intermediate] gate_proj's output, then silu(gate) * up.</summary>
    public DeviceTensor Gate { get; }
    /// <summary>[T, intermediate] up_proj's output.</summary>
    public DeviceTensor Up { get; }
    /// <summary>[R, hidden] the final-normed rows that need logits.</summary>
    public DeviceTensor FinalHidden { get; }
    /// <summary>[maxPositions, headDim/2, 2] (cos, sin) of every position's angles.</summary>
    public DeviceTensor RopeCosSin { get; }

    /// <summary>Bytes the workspace takes for a model and token budget.</summary>
    public static long Bytes(LlamaConfig c, int maxTokens, int maxPositions) =>
        4L * maxTokens * (4L * c.HiddenSize + 2L * c.QSize + 2L * c.KvSize + 2L * c.IntermediateSize) + 4L * maxPositions * c.HeadDim;

    /// <summary>Frees every buffer.</summary>
    public void Dispose()
    {
        foreach (var t in new[] { Hidden, Normed, Q, K, V, Attention, Out, Gate, Up, FinalHidden, RopeCosSin }) t.Dispose();
    }
}
