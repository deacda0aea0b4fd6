using LoraEngine.Models;

namespace LoraEngine.Lora;

/// <summary>The seven Llama projections a LoRA adapter may target, by their Hugging Face names.</summary>
public enum LoraModule
{
    /// <summary>self_attn.q_proj: hidden → heads × head_dim.</summary>
    QProj,
    /// <summary>self_attn.k_proj: hidden → kv heads × head_dim.</summary>
    KProj,
    /// <summary>self_attn.v_proj: hidden → kv heads × head_dim.</summary>
    VProj,
    /// <summary>self_attn.o_proj: heads × head_dim → hidden.</summary>
    OProj,
    /// <summary>mlp.gate_proj: hidden → intermediate.</summary>
    GateProj,
    /// <summary>mlp.up_proj: hidden → intermediate.</summary>
    UpProj,
    /// <summary>mlp.down_proj: intermediate → hidden.</summary>
    DownProj,
}

/// <summary>Names and shapes of <see cref="LoraModule"/>s: Hugging Face names, module paths, in/out features.</summary>
public static class LoraModules
{
    static readonly string[] s_names = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

    /// <summary>"q_proj", "gate_proj", ...</summary>
    public static string HfName(this LoraModule module) => s_names[(int)module];

    /// <summary>"self_attn" or "mlp".</summary>
    public static string Block(this LoraModule module) => module <= LoraModule.OProj ? "self_attn" : "mlp";

    /// <summary>Module path inside the model: model.layers.{layer}.{block}.{name}.</summary>
    public static string ModulePath(this LoraModule module, int layer) => $"model.layers.{layer}.{module.Block()}.{module.HfName()}";

    /// <summary>The projection named <paramref name="hfName"/> ("q_proj", ...; ordinal); false for any other name.</summary>
    public static bool TryParse(string hfName, out LoraModule module)
    {
        int i = Array.IndexOf(s_names, hfName);
        module = (LoraModule)Math.Max(i, 0);
        return i >= 0;
    }

    /// <summary>The projection named <paramref name="hfName"/>; ArgumentException for a name that is not a Llama projection.</summary>
    public static LoraModule FromHfName(string hfName) =>
        TryParse(hfName, out var m) ? m : throw new ArgumentException($"'{hfName}' is not a Llama projection", nameof(hfName));

    /// <summary>
    /// Whether tensor parallelism splits the projection's inputs (o_proj, down_proj: row-parallel, followed by an
    /// all-reduce) rather than its outputs (the other five: column-parallel).
    /// </summary>
    public static bool IsRowParallel(this LoraModule module) => module is LoraModule.OProj or LoraModule.DownProj;

    /// <summary>(in, out) features of the projection in a model.</summary>
    public static (int In, int Out) Features(this LoraModule module, LlamaConfig c) => module switch
    {
        LoraModule.QProj => (c.HiddenSize, c.QSize),
        LoraModule.KProj or LoraModule.VProj => (c.HiddenSize, c.KvSize),
        LoraModule.OProj => (c.QSize, c.HiddenSize),
        LoraModule.GateProj or LoraModule.UpProj => (c.HiddenSize, c.IntermediateSize),
        _ => (c.IntermediateSize, c.HiddenSize),
    };
}
