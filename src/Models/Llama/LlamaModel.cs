using LoraEngine.Models.Safetensors;
using LoraEngine.Tensors;

namespace LoraEngine.Models.Llama;

/// <summary>
/// Llama for causal LM on the tensor layer. Forward reads top to bottom:
/// x = embed(ids); for each layer: x = layer(x); rows = rmsnorm(x[logitRows]); logits = lm_head(rows).
/// Weights stay in their stored dtype on the device unless a dtype is asked for.
/// </summary>
public sealed class LlamaModel : IDisposable
{
    LlamaModel(ComputeDevice device, LlamaConfig config, DeviceTensor embedTokens, LlamaLayer[] layers, DeviceTensor norm, ILinear lmHead, DType weightDType)
    {
        Device = device;
        Config = config;
        EmbedTokens = embedTokens;
        Layers = layers;
        Norm = norm;
        LmHead = lmHead;
        WeightDType = weightDType;
    }

    /// <summary>The device the weights live on.</summary>
    public ComputeDevice Device { get; }

    /// <summary>The model's config.json.</summary>
    public LlamaConfig Config { get; }

    /// <summary>[vocab, hidden]</summary>
    public DeviceTensor EmbedTokens { get; }

    /// <summary>The decoder layers, in order.</summary>
    public IReadOnlyList<LlamaLayer> Layers { get; }

    /// <summary>[hidden] final RMSNorm weight.</summary>
    public DeviceTensor Norm { get; }

    /// <summary>[vocab, hidden]; the embedding table itself when the embeddings are tied.</summary>
    public ILinear LmHead { get; }

    /// <summary>The dtype the weights are kept in on the device.</summary>
    public DType WeightDType { get; }

    /// <summary>Bytes of weights on the device.</summary>
    public long WeightBytes { get; private set; }

    /// <summary>Loads config.json and the safetensors checkpoint (single file or sharded) from a model folder.</summary>
    public static LlamaModel Load(ComputeDevice device, string modelDir, DType? dtype = null)
    {
        var config = LlamaConfig.Load(modelDir);
        using var checkpoint = SafetensorsCheckpoint.Open(modelDir);
        return Load(device, config, checkpoint, dtype);
    }

    /// <summary>Uploads the weights of <paramref name="checkpoint"/>; <paramref name="dtype"/> null keeps each tensor's stored dtype.</summary>
    public static LlamaModel Load(ComputeDevice device, LlamaConfig config, SafetensorsCheckpoint checkpoint, DType? dtype = null)
    {
        var owned = new List<IDisposable>();
        DeviceTensor Weight(string name, params int[] shape)
        {
            var t = WeightUploader.Upload(device, checkpoint, name, dtype, shape);
            owned.Add(t);
            return t;
        }

        try
        {
            int hidden = config.HiddenSize, inter = config.IntermediateSize;
            var embed = Weight("model.embed_tokens.weight", config.VocabSize, hidden);
            var layers = new LlamaLayer[config.NumHiddenLayers];
            for (int i = 0; i < layers.Length; i++)
            {
                string p = $"model.layers.{i}.";
                layers[i] = new LlamaLayer
                {
                    InputLayerNorm = Weight(p + "input_layernorm.weight", hidden),
                    PostAttentionLayerNorm = Weight(p + "post_attention_layernorm.weight", hidden),
                    QProj = new DenseLinear(Weight(p + "self_attn.q_proj.weight", config.QSize, hidden)),
                    KProj = new DenseLinear(Weight(p + "self_attn.k_proj.weight", config.KvSize, hidden)),
                    VProj = new DenseLinear(Weight(p + "self_attn.v_proj.weight", config.KvSize, hidden)),
                    OProj = new DenseLinear(Weight(p + "self_attn.o_proj.weight", hidden, config.QSize)),
                    GateProj = new DenseLinear(Weight(p + "mlp.gate_proj.weight", inter, hidden)),
                    UpProj = new DenseLinear(Weight(p + "mlp.up_proj.weight", inter, hidden)),
                    DownProj = new DenseLinear(Weight(p + "mlp.down_proj.weight", hidden, inter)),
                };
            }
            var norm = Weight("model.norm.weight", hidden);
            // Tied embeddings: the output projection reuses the table (the checkpoint usually has no lm_head.weight).
            ILinear lmHead = config.TieWordEmbeddings
                ? new DenseLinear(embed)
                : new DenseLinear(Weight("lm_head.weight", config.VocabSize, hidden));
            var model = new LlamaModel(device, config, embed, layers, norm, lmHead, embed.DType)
            {
                WeightBytes = owned.OfType<DeviceTensor>().Sum(t => t.SizeInBytes),
            };
            return model;
        }
        catch
        {
            foreach (var d in owned) d.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Runs every layer over the step's tokens (writing their K/V into <paramref name="cache"/>) and returns the
    /// final-normed hidden states of <see cref="StepBatch.LogitRows"/>: [R, hidden], a view valid until the next call.
    /// </summary>
    public DeviceTensor Forward(StepBatch batch, PagedKvCache cache, ForwardWorkspace workspace)
    {
        ArgumentNullException.ThrowIfNull(batch);
        if (batch.NumTokens > workspace.MaxTokens)
            throw new ArgumentOutOfRangeException(nameof(batch), batch.NumTokens, $"the workspace holds {workspace.MaxTokens} tokens");

        var x = workspace.Hidden.Slice(0, batch.NumTokens);               // [T, hidden]
        Device.Elementwise.Embedding(x, batch.TokenIds, EmbedTokens);
        for (int l = 0; l < Layers.Count; l++)
            Layers[l].Forward(x, l, batch, cache, workspace, Config);

        int rows = batch.LogitRows.Dim(0);
        var picked = workspace.Normed.Slice(0, rows);                      // [R, hidden]
        Device.Elementwise.Embedding(picked, batch.LogitRows, x);         // gather rows of x
        var final = workspace.FinalHidden.Slice(0, rows);
        Device.Norm.RmsNorm(final, picked, Norm, (float)Config.RmsNormEps);
        return final;
    }

    /// <summary>logits [r, vocab] = lm_head(hidden [r, hidden]).</summary>
    public void ComputeLogits(DeviceTensor logits, DeviceTensor hidden, StepBatch batch) => LmHead.Forward(logits, hidden, batch);

    /// <summary>Replaces projections, e.g. to wrap them in LoRA layers: wrap(layer, hfName, linear) → new linear.</summary>
    public void WrapProjections(Func<int, string, ILinear, ILinear> wrap)
    {
        for (int l = 0; l < Layers.Count; l++)
        {
            var layer = Layers[l];
            layer.QProj = wrap(l, "q_proj", layer.QProj);
            layer.KProj = wrap(l, "k_proj", layer.KProj);
            layer.VProj = wrap(l, "v_proj", layer.VProj);
            layer.OProj = wrap(l, "o_proj", layer.OProj);
            layer.GateProj = wrap(l, "gate_proj", layer.GateProj);
            layer.UpProj = wrap(l, "up_proj", layer.UpProj);
            layer.DownProj = wrap(l, "down_proj", layer.DownProj);
        }
    }

    /// <summary>Frees every weight on the device (a tied embedding table once).</summary>
    public void Dispose()
    {
        foreach (var layer in Layers) layer.Dispose();
        Norm.Dispose();
        if (LmHead is DenseLinear head && !ReferenceEquals(head.Weight, EmbedTokens)) head.Dispose();
        EmbedTokens.Dispose();
    }
}
