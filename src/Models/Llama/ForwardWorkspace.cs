using LoraEngine.Tensors;

namespace LoraEngine.Models.Llama;

/// <summary>Activation buffers for up to <see cref="MaxTokens"/> tokens, allocated once; a step uses row slices.</summary>
public sealed class ForwardWorkspace : IDisposable
{
    public ForwardWorkspace(ComputeDevice device, LlamaConfig config, int maxTokens)
    {
        if (maxTokens <= 0) throw new ArgumentOutOfRangeException(nameof(maxTokens), maxTokens, "must be positive");
        MaxTokens = maxTokens;
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

    /// <summary>Bytes the workspace takes for a model and token budget.</summary>
    public static long Bytes(LlamaConfig c, int maxTokens) =>
        4L * maxTokens * (4L * c.HiddenSize + 2L * c.QSize + 2L * c.KvSize + 2L * c.IntermediateSize);

    public void Dispose()
    {
        foreach (var t in new[] { Hidden, Normed, Q, K, V, Attention, Out, Gate, Up, FinalHidden }) t.Dispose();
    }
}
