using LoraEngine.Models.Safetensors;
using LoraEngine.Tensors;

namespace LoraEngine.Bench.Serving;

/// <summary>Writes random-weight checkpoints and PEFT adapters of a shape to disk, so the engine loads them as usual.</summary>
public static class RandomCheckpoint
{
    /// <summary>config.json + model.safetensors (BF16) + a tokenizer.json (the shipped model's; ids past it decode to nothing).</summary>
    public static string WriteModel(string dir, BenchShape s, string tokenizerJson)
    {
        Directory.CreateDirectory(dir);
        var rnd = new Random(1);
        var tensors = new List<(string, string, long[], byte[])>();
        void Add(string name, float scale, float offset, params int[] shape) =>
            tensors.Add(SafetensorsWriter.Tensor(name, Values(rnd, shape.Aggregate(1, (a, b) => a * b), scale, offset), DType.BF16, shape.Select(d => (long)d).ToArray()));
        int q = s.Heads * s.HeadDim, kv = s.KvHeads * s.HeadDim;
        Add("model.embed_tokens.weight", 0.02f, 0, s.Vocab, s.Hidden);
        for (int l = 0; l < s.Layers; l++)
        {
            string p = $"model.layers.{l}.";
            Add(p + "input_layernorm.weight", 0.1f, 1, s.Hidden);
            Add(p + "post_attention_layernorm.weight", 0.1f, 1, s.Hidden);
            Add(p + "self_attn.q_proj.weight", 0.02f, 0, q, s.Hidden);
            Add(p + "self_attn.k_proj.weight", 0.02f, 0, kv, s.Hidden);
            Add(p + "self_attn.v_proj.weight", 0.02f, 0, kv, s.Hidden);
            Add(p + "self_attn.o_proj.weight", 0.02f, 0, s.Hidden, q);
            Add(p + "mlp.gate_proj.weight", 0.02f, 0, s.Intermediate, s.Hidden);
            Add(p + "mlp.up_proj.weight", 0.02f, 0, s.Intermediate, s.Hidden);
            Add(p + "mlp.down_proj.weight", 0.02f, 0, s.Hidden, s.Intermediate);
        }
        Add("model.norm.weight", 0.1f, 1, s.Hidden);
        if (!s.Tied) Add("lm_head.weight", 0.02f, 0, s.Vocab, s.Hidden);
        SafetensorsWriter.Write(Path.Combine(dir, "model.safetensors"), tensors);
        File.WriteAllText(Path.Combine(dir, "config.json"), ConfigJson(s));
        File.Copy(tokenizerJson, Path.Combine(dir, "tokenizer.json"), overwrite: true);
        return dir;
    }

    /// <summary>The Hugging Face config.json of the shape (Llama 3 RoPE scaling, BF16).</summary>
    public static string ConfigJson(BenchShape s) => $$"""
        {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": {{s.Hidden}}, "intermediate_size": {{s.Intermediate}},
         "num_hidden_layers": {{s.Layers}}, "num_attention_heads": {{s.Heads}}, "num_key_value_heads": {{s.KvHeads}}, "head_dim": {{s.HeadDim}},
         "vocab_size": {{s.Vocab}}, "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "tie_word_embeddings": {{(s.Tied ? "true" : "false")}},
         "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
         "bos_token_id": 0, "eos_token_id": 1, "dtype": "bfloat16"}
        """;

    /// <summary>A PEFT adapter of rank <paramref name="rank"/> on all seven projections (BF16 weights, alpha 32).</summary>
    public static string WriteAdapter(string dir, BenchShape s, int rank, int seed)
    {
        Directory.CreateDirectory(dir);
        var rnd = new Random(seed);
        var tensors = new List<(string, string, long[], byte[])>();
        int q = s.Heads * s.HeadDim, kv = s.KvHeads * s.HeadDim;
        (string Name, string Block, int In, int Out)[] modules =
        [
            ("q_proj", "self_attn", s.Hidden, q), ("k_proj", "self_attn", s.Hidden, kv), ("v_proj", "self_attn", s.Hidden, kv),
            ("o_proj", "self_attn", q, s.Hidden), ("gate_proj", "mlp", s.Hidden, s.Intermediate), ("up_proj", "mlp", s.Hidden, s.Intermediate),
            ("down_proj", "mlp", s.Intermediate, s.Hidden),
        ];
        for (int l = 0; l < s.Layers; l++)
            foreach (var (name, block, inF, outF) in modules)
            {
                string p = $"base_model.model.model.layers.{l}.{block}.{name}";
                tensors.Add(SafetensorsWriter.Tensor(p + ".lora_A.weight", Values(rnd, rank * inF, 0.02f, 0), DType.BF16, rank, inF));
                tensors.Add(SafetensorsWriter.Tensor(p + ".lora_B.weight", Values(rnd, outF * rank, 0.02f, 0), DType.BF16, outF, rank));
            }
        SafetensorsWriter.Write(Path.Combine(dir, "adapter_model.safetensors"), tensors);
        File.WriteAllText(Path.Combine(dir, "adapter_config.json"), $$"""
            {"peft_type": "LORA", "r": {{rank}}, "lora_alpha": 32, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], "bias": "none"}
            """);
        return dir;
    }

    static float[] Values(Random rnd, int n, float scale, float offset)
    {
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = offset + (float)(rnd.NextDouble() * 2 - 1) * scale;
        return a;
    }
}
