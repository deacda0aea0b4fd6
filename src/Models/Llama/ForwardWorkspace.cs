using LoraEngine.Tensors;
using LoraEngine.Tensors.Kernels;

namespace LoraEngine.Models.Llama;

/// <summary>Activation buffers for up to <see cref="MaxTokens"/> tokens, allocated once; a step uses row slices.</summary>
public sealed class ForwardWorkspace : IDisposable
{
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

    public int MaxTokens { get; }
    public DeviceTensor Hidden { get; }      // [T, hidden] the residual stream
    public DeviceTensor Normed { get; }      // [T, hidden]
    public DeviceTensor Q { get; }           // [T, heads*headDim]
    public DeviceTensor K { get; }           // [T, kvHeads*headDim]
    public DeviceTensor V { get; }           // [T, kvHeads*headDim]
    public DeviceTensor Attention { get; }   // [T, heads*headDim]
    public DeviceTensor Out { get; }         // [T, hidden]
    public DeviceTensor Gate { get; }        // [T, intermediate]
    public DeviceTensor Up { get; }          // [T, intermediate]
    public DeviceTensor FinalHidden { get; } // [R, hidden] normed rows that need logits
    public DeviceTensor RopeCosSin { get; }  // [maxPositions, headDim/2, 2] (cos, sin) of every position's angles

    /// <summary>Bytes the workspace takes for a model and token budget.</summary>
    public static long Bytes(LlamaConfig c, int maxTokens, int maxPositions) =>
        4L * maxTokens * (4L * c.HiddenSize + 2L * c.QSize + 2L * c.KvSize + 2L * c.IntermediateSize) + 4L * maxPositions * c.HeadDim;

    public void Dispose()
    {
        foreach (var t in new[] { Hidden, Normed, Q, K, V, Attention, Out, Gate, Up, FinalHidden, RopeCosSin }) t.Dispose();
    }
}
