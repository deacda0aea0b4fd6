using LoraEngine.Models.Safetensors;
using LoraEngine.Tensors;
using LoraEngine.Tensors.Distributed;

namespace LoraEngine.Models.Llama;

/// <summary>
/// Llama for causal LM on the tensor layer. Forward reads top to bottom:
/// x = embed(ids); for each layer: x = layer(x); rows = rmsnorm(x[logitRows]); logits = lm_head(rows).
/// Weights stay in their stored dtype on the device unless a dtype is asked for.
///
/// Under tensor parallelism each rank is a LlamaModel of its own holding its share of every layer (see
/// <see cref="LlamaLayer"/>). The embedding table is replicated: every rank needs the whole residual stream, and a
/// vocabulary-split lookup would cost an all-reduce of [T, hidden] per step to save a table that is a few percent of
/// the weights. lm_head lives on rank 0 alone, which computes the logits and samples: the sampler (penalties, logprobs
/// over the whole vocabulary) stays as it is, with no all-gather of [R, vocab] logits, at the price of rank 0 doing the
/// whole lm_head product.
/// </summary>
public sealed class LlamaModel : IDisposable
{
    LlamaModel(ComputeDevice device, LlamaConfig config, ICommunicator communicator, DeviceTensor embedTokens, LlamaLayer[] layers, DeviceTensor norm, ILinear? lmHead,
        DType weightDType)
    {
        Device = device;
        Config = config;
        Communicator = communicator;
        ShardConfig = config.ShardFor(communicator.WorldSize);
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

    /// <summary>The widths this rank holds (heads, KV heads, MLP columns); <see cref="Config"/> itself with one rank.</summary>
    public LlamaConfig ShardConfig { get; }

    /// <summary>This rank's tensor-parallel group (<see cref="SingleRankCommunicator"/> on one device).</summary>
    public ICommunicator Communicator { get; }

    /// <summary>[vocab, hidden]</summary>
    public DeviceTensor EmbedTokens { get; }

    /// <summary>The decoder layers, in order.</summary>
    public IReadOnlyList<LlamaLayer> Layers { get; }

    /// <summary>[hidden] final RMSNorm weight.</summary>
    public DeviceTensor Norm { get; }

    /// <summary>[vocab, hidden]; the embedding table itself when the embeddings are tied. Null on tensor-parallel ranks other than 0.</summary>
    public ILinear? LmHead { get; }

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
    public static LlamaModel Load(ComputeDevice device, LlamaConfig config, SafetensorsCheckpoint checkpoint, DType? dtype = null) =>
        Load(device, config, checkpoint, dtype, SingleRankCommunicator.Instance);

    /// <summary>
    /// Uploads the share of <paramref name="checkpoint"/> that rank <paramref name="communicator"/>.Rank of its group
    /// holds: rows of q/k/v/gate/up (its heads and MLP columns), columns of o/down, the rest whole (lm_head on rank 0
    /// only). Throws <see cref="ArgumentOutOfRangeException"/> when the group's size does not divide the heads, the KV
    /// heads or the intermediate size.
    /// </summary>
    public static LlamaModel Load(ComputeDevice device, LlamaConfig config, SafetensorsCheckpoint checkpoint, DType? dtype, ICommunicator communicator)
    {
        ArgumentNullException.ThrowIfNull(communicator);
        var shard = config.ShardFor(communicator.WorldSize);
        int rank = communicator.Rank;
        var owned = new List<IDisposable>();
        DeviceTensor Sliced(string name, WeightSlice? slice, params int[] shape)
        {
            var t = WeightUploader.Upload(device, checkpoint, name, dtype, shape, communicator.WorldSize == 1 ? null : slice);
            owned.Add(t);
            return t;
        }
        DeviceTensor Weight(string name, params int[] shape) => Sliced(name, null, shape);
        // Column-parallel: this rank's rows of the output; row-parallel: its columns of the input.
        DenseLinear Column(string name, int outFeatures, int inFeatures, int shardOut) => new(Sliced(name, new WeightSlice(0, rank * shardOut, shardOut), outFeatures, inFeatures));
        DenseLinear Row(string name, int outFeatures, int inFeatures, int shardIn) => new(Sliced(name, new WeightSlice(1, rank * shardIn, shardIn), outFeatures, inFeatures));

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
                    QProj = Column(p + "self_attn.q_proj.weight", config.QSize, hidden, shard.QSize),
                    KProj = Column(p + "self_attn.k_proj.weight", config.KvSize, hidden, shard.KvSize),
                    VProj = Column(p + "self_attn.v_proj.weight", config.KvSize, hidden, shard.KvSize),
                    OProj = Row(p + "self_attn.o_proj.weight", hidden, config.QSize, shard.QSize),
                    GateProj = Column(p + "mlp.gate_proj.weight", inter, hidden, shard.IntermediateSize),
                    UpProj = Column(p + "mlp.up_proj.weight", inter, hidden, shard.IntermediateSize),
                    DownProj = Row(p + "mlp.down_proj.weight", hidden, inter, shard.IntermediateSize),
                };
            }
            var norm = Weight("model.norm.weight", hidden);
            // Tied embeddings: the output projection reuses the table (the checkpoint usually has no lm_head.weight).
            ILinear? lmHead = rank != 0 ? null
                : config.TieWordEmbeddings ? new DenseLinear(embed)
                : new DenseLinear(Weight("lm_head.weight", config.VocabSize, hidden));
            var model = new LlamaModel(device, config, communicator, embed, layers, norm, lmHead, embed.DType)
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
        MlpOutput? mlpOut = null;                                           // each layer's MLP output, added by the next layer's first norm
        for (int l = 0; l < Layers.Count; l++)
            mlpOut = Layers[l].Forward(x, mlpOut, l, batch, cache, workspace, ShardConfig, Communicator);
        if (mlpOut is { } last)
        {
            if (last.Expand != null) Device.Lora.ExpandAt(last.Values, last.Expand);
            Device.Elementwise.AddInPlace(x, last.Values);
        }

        int rows = batch.LogitRows.Dim(0);
        var picked = workspace.Normed.Slice(0, rows);                      // [R, hidden]
        Device.Elementwise.Embedding(picked, batch.LogitRows, x);         // gather rows of x
        var final = workspace.FinalHidden.Slice(0, rows);
        Device.Norm.RmsNorm(final, picked, Norm, (float)Config.RmsNormEps);
        return final;
    }

    /// <summary>logits [r, vocab] = lm_head(hidden [r, hidden]); on rank 0 only under tensor parallelism.</summary>
    public void ComputeLogits(DeviceTensor logits, DeviceTensor hidden, StepBatch batch) =>
        (LmHead ?? throw new InvalidOperationException($"tensor-parallel rank {Communicator.Rank} holds no lm_head: rank 0 computes the logits"))
        .Forward(logits, hidden, batch);

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
