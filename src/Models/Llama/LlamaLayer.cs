using LoraEngine.Tensors;
using LoraEngine.Tensors.Distributed;
using LoraEngine.Tensors.Kernels;

namespace LoraEngine.Models.Llama;

/// <summary>
/// One decoder layer: h = x + attention(rmsnorm(x)); out = h + mlp(rmsnorm(h)). Projections keep their
/// Hugging Face names so PEFT target modules map 1:1; each is an <see cref="ILinear"/> that LoRA may wrap.
/// Under tensor parallelism (gpt-fast's tp.py, Megatron's split) a rank holds its own heads of q/k/v and its own columns
/// of gate/up (column-parallel: the outputs are this rank's share, nothing to exchange), and the matching input columns
/// of o and down (row-parallel: each rank's product is a partial sum over its inputs), so the only exchange of a layer is
/// the all-reduce after o and after down. With one rank the communicator does nothing.
/// </summary>
public sealed class LlamaLayer : IDisposable
{
    /// <summary>[hidden] RMSNorm weight before attention (input_layernorm).</summary>
    public required DeviceTensor InputLayerNorm { get; init; }
    /// <summary>[hidden] RMSNorm weight before the MLP (post_attention_layernorm).</summary>
    public required DeviceTensor PostAttentionLayerNorm { get; init; }
    /// <summary>self_attn.q_proj: [heads*headDim, hidden].</summary>
    public required ILinear QProj { get; set; }
    /// <summary>self_attn.k_proj: [kvHeads*headDim, hidden].</summary>
    public required ILinear KProj { get; set; }
    /// <summary>self_attn.v_proj: [kvHeads*headDim, hidden].</summary>
    public required ILinear VProj { get; set; }
    /// <summary>self_attn.o_proj: [hidden, heads*headDim].</summary>
    public required ILinear OProj { get; set; }
    /// <summary>mlp.gate_proj: [intermediate, hidden].</summary>
    public required ILinear GateProj { get; set; }
    /// <summary>mlp.up_proj: [intermediate, hidden].</summary>
    public required ILinear UpProj { get; set; }
    /// <summary>mlp.down_proj: [hidden, intermediate].</summary>
    public required ILinear DownProj { get; set; }

    /// <summary>
    /// x [T, hidden] is updated in place: x += pending; x += attention(norm(x)); then returns mlp(norm(x)), which the caller
    /// adds to x (the next layer fuses that add into its first norm, one launch fewer a layer). On one device a projection's
    /// LoRA expand may be left to the op that reads its output (<see cref="ILinear.ForwardPending"/>): q/k/v's to the RoPE
    /// and KV write, o's to the norm after it, gate/up's to SwiGLU, down's to the next layer's first norm (the returned
    /// <see cref="MlpOutput.Expand"/>).
    /// </summary>
    /// <param name="x">[T, hidden] the residual stream (the same on every rank)</param>
    /// <param name="pending">the previous layer's MLP output, not yet added to x; null for the first layer</param>
    /// <param name="layer">this layer's index (its KV cache)</param>
    /// <param name="batch">the step's tokens</param>
    /// <param name="cache">this rank's KV cache (its KV heads)</param>
    /// <param name="ws">this rank's activation buffers</param>
    /// <param name="config">the widths this rank holds (<see cref="LlamaConfig.ShardFor"/>)</param>
    /// <param name="communicator">this rank's group: sums the partial outputs of o_proj and down_proj</param>
    /// <returns>this layer's MLP output (a view of the workspace, valid until the next layer's attention) and down_proj's pending expand</returns>
    public MlpOutput Forward(DeviceTensor x, MlpOutput? pending, int layer, StepBatch batch, PagedKvCache cache, ForwardWorkspace ws, LlamaConfig config, ICommunicator communicator)
    {
        var device = x.Device;
        int t = batch.NumTokens;
        var h = ws.Normed.Slice(0, t);
        bool pends = communicator.WorldSize == 1;                          // o's and down's whole outputs are what the ranks sum

        // Attention block, after x += pending fused into its norm.
        if (pending is not { } previous) device.Norm.RmsNorm(h, x, InputLayerNorm, (float)config.RmsNormEps);
        else device.Norm.AddRmsNorm(h, x, previous.Values, previous.Expand, InputLayerNorm, (float)config.RmsNormEps);
        var q = ws.Q.Slice(0, t);
        var k = ws.K.Slice(0, t);
        var v = ws.V.Slice(0, t);
        var qkv = new PendingExpand?[pends ? 3 : 0];
        SharedInputLinears.ForwardPending(h, batch, qkv, (q, QProj), (k, KProj), (v, VProj));
        device.Attention.RotateAndWriteKv(q, k, v, batch.Positions, ws.RopeCosSin, config.HeadDim, cache.Keys(layer), cache.Values(layer), batch.SlotMapping,
            Pending(qkv, 0), Pending(qkv, 1), Pending(qkv, 2));
        var attn = ws.Attention.Slice(0, t);
        device.Attention.PagedAttention(attn, q, cache.Keys(layer), cache.Values(layer), batch.BlockTables,
            batch.TokenSequence, batch.Positions, config.NumAttentionHeads, config.NumKeyValueHeads, config.HeadDim,
            1f / MathF.Sqrt(config.HeadDim));
        var o = ws.Out.Slice(0, t);
        var oExpand = Forward(OProj, o, attn, batch, pends);
        communicator.AllReduceSum(o);                                      // Σ over ranks' heads

        // MLP block: down(silu(gate(h)) * up(h)), after x += o fused into its norm.
        device.Norm.AddRmsNorm(h, x, o, oExpand, PostAttentionLayerNorm, (float)config.RmsNormEps);
        var gate = ws.Gate.Slice(0, t);
        var up = ws.Up.Slice(0, t);
        var gateUp = new PendingExpand?[pends ? 2 : 0];
        SharedInputLinears.ForwardPending(h, batch, gateUp, (gate, GateProj), (up, UpProj));
        device.Elementwise.SwiGlu(gate, gate, up, Pending(gateUp, 0), Pending(gateUp, 1));
        var downExpand = Forward(DownProj, o, gate, batch, pends);
        communicator.AllReduceSum(o);                                      // Σ over ranks' MLP columns
        return new MlpOutput(o, downExpand);
    }

    /// <summary>y = linear(x), what remains left pending where <paramref name="pends"/>.</summary>
    static PendingExpand? Forward(ILinear linear, DeviceTensor y, DeviceTensor x, StepBatch batch, bool pends)
    {
        if (pends) return linear.ForwardPending(y, x, batch);
        linear.Forward(y, x, batch);
        return null;
    }

    static PendingExpand? Pending(PendingExpand?[] pending, int i) => i < pending.Length ? pending[i] : null;

    /// <summary>The seven projections by their Hugging Face module names.</summary>
    public IEnumerable<(string Name, ILinear Linear)> Projections() =>
    [
        ("q_proj", QProj), ("k_proj", KProj), ("v_proj", VProj), ("o_proj", OProj),
        ("gate_proj", GateProj), ("up_proj", UpProj), ("down_proj", DownProj),
    ];

    /// <summary>Frees the norm weights and every projection that is disposable (LoRA wrappers free their base).</summary>
    public void Dispose()
    {
        InputLayerNorm.Dispose();
        PostAttentionLayerNorm.Dispose();
        foreach (var (_, linear) in Projections()) (linear as IDisposable)?.Dispose();
    }
}

/// <summary>A layer's MLP output, not yet added to the residual stream.</summary>
/// <param name="Values">[T, hidden] down_proj's output</param>
/// <param name="Expand">down_proj's LoRA expand still to add to <paramref name="Values"/> (null: none)</param>
public readonly record struct MlpOutput(DeviceTensor Values, PendingExpand? Expand);
