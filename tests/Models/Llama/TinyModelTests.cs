using System.Runtime.InteropServices;
using LoraEngine.Models.Llama;
using LoraEngine.Models.Safetensors;
using LoraEngine.Tensors;
using LoraEngine.TestSupport;
using Xunit;

namespace LoraEngine.Models.Tests.Llama;

/// <summary>
/// What the fixtures lack — tied embeddings, MQA, head_dim ≠ hidden/heads, llama3 rope scaling, F16 —
/// checked on tiny random models written to disk (config.json + model.safetensors) against a
/// double-precision reference forward.
/// </summary>
public class TinyModelTests
{
    public sealed record Shape(string Name, int Hidden, int Heads, int KvHeads, int HeadDim, bool Tied, bool Llama3, string DType);

    public static TheoryData<string> Cases => new() { "tied", "mqa", "head-dim", "llama3", "f16", "bf16-tied-mqa" };

    static Shape ShapeOf(string name) => name switch
    {
        "tied" => new(name, 48, 4, 2, 12, Tied: true, Llama3: false, "F32"),
        "mqa" => new(name, 48, 6, 1, 8, Tied: false, Llama3: false, "F32"),
        "head-dim" => new(name, 40, 4, 2, 16, Tied: false, Llama3: false, "F32"),
        "llama3" => new(name, 64, 4, 4, 16, Tied: false, Llama3: true, "F32"),
        "f16" => new(name, 48, 4, 2, 12, Tied: false, Llama3: false, "F16"),
        _ => new(name, 48, 4, 1, 20, Tied: true, Llama3: true, "BF16"),
    };

    internal static (string Dir, Dictionary<string, float[]> Weights) WriteModel(Shape s, int seed, int layers = 2, int vocab = 97, int inter = 72)
    {
        string dir = Path.Combine(Path.GetTempPath(), "loraengine-tiny-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        var rnd = new RandomData(seed);
        var weights = new Dictionary<string, float[]>();
        var shapes = new Dictionary<string, long[]>();
        void Add(string name, float scale, params int[] shape)
        {
            var values = rnd.Floats(shape.Aggregate(1L, (a, b) => a * b), scale);
            if (name.EndsWith("layernorm.weight") || name == "model.norm.weight") values = values.Select(v => 1f + v).ToArray();
            weights[name] = values;
            shapes[name] = shape.Select(d => (long)d).ToArray();
        }
        int q = s.Heads * s.HeadDim, kv = s.KvHeads * s.HeadDim;
        Add("model.embed_tokens.weight", 0.5f, vocab, s.Hidden);
        for (int l = 0; l < layers; l++)
        {
            string p = $"model.layers.{l}.";
            Add(p + "input_layernorm.weight", 0.1f, s.Hidden);
            Add(p + "post_attention_layernorm.weight", 0.1f, s.Hidden);
            Add(p + "self_attn.q_proj.weight", 0.3f, q, s.Hidden);
            Add(p + "self_attn.k_proj.weight", 0.3f, kv, s.Hidden);
            Add(p + "self_attn.v_proj.weight", 0.3f, kv, s.Hidden);
            Add(p + "self_attn.o_proj.weight", 0.3f, s.Hidden, q);
            Add(p + "mlp.gate_proj.weight", 0.3f, inter, s.Hidden);
            Add(p + "mlp.up_proj.weight", 0.3f, inter, s.Hidden);
            Add(p + "mlp.down_proj.weight", 0.3f, s.Hidden, inter);
        }
        Add("model.norm.weight", 0.1f, s.Hidden);
        if (!s.Tied) Add("lm_head.weight", 0.3f, vocab, s.Hidden);

        var dtype = DTypeExtensions.Parse(s.DType);
        var tensors = new List<(string, string, long[], byte[])>();
        foreach (var (name, values) in weights)
        {
            byte[] data;
            if (dtype == DType.F32) data = MemoryMarshal.AsBytes(values.AsSpan()).ToArray();
            else
            {
                var bits = HalfBits.FromFloat(dtype, values);
                HalfBits.ToFloat(dtype, bits, values); // the reference sees the stored (rounded) values
                data = MemoryMarshal.AsBytes(bits.AsSpan()).ToArray();
            }
            tensors.Add((name, s.DType, shapes[name], data));
        }
        SafetensorsWriter.Write(Path.Combine(dir, "model.safetensors"), tensors);

        string rope = s.Llama3
            ? """{"rope_type": "llama3", "rope_theta": 10000.0, "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 2.0, "original_max_position_embeddings": 16}"""
            : """{"rope_type": "default", "rope_theta": 10000.0}""";
        File.WriteAllText(Path.Combine(dir, "config.json"), $$"""
            {
              "architectures": ["LlamaForCausalLM"], "model_type": "llama",
              "hidden_size": {{s.Hidden}}, "intermediate_size": {{inter}}, "num_hidden_layers": {{layers}},
              "num_attention_heads": {{s.Heads}}, "num_key_value_heads": {{s.KvHeads}}, "head_dim": {{s.HeadDim}},
              "vocab_size": {{vocab}}, "max_position_embeddings": 256, "rms_norm_eps": 1e-6,
              "rope_parameters": {{rope}}, "tie_word_embeddings": {{(s.Tied ? "true" : "false")}},
              "bos_token_id": 0, "eos_token_id": [1, 2], "dtype": "{{s.DType switch { "F32" => "float32", "F16" => "float16", _ => "bfloat16" }}}"
            }
            """);
        return (dir, weights);
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Forward_matches_the_double_precision_reference(string name)
    {
        var shape = ShapeOf(name);
        var (dir, weights) = WriteModel(shape, seed: name.Length * 7919);
        try
        {
            foreach (var device in TestDevices.ForModels)
            {
                using var model = LlamaModel.Load(device, dir);
                Assert.Equal(shape.Tied, model.Config.TieWordEmbeddings);
                using var runner = new SequenceRunner(model, maxTokens: 64);
                var ids = new RandomData(3).Ints(40, 0, model.Config.VocabSize); // past the llama3 original length of 16
                var logits = runner.PromptLogits(ids);
                var expected = ReferenceLlama.Logits(model.Config, weights, ids);
                int vocab = model.Config.VocabSize;
                for (int t = 0; t < ids.Length; t++)
                    Tolerance.AssertRelative(logits.AsSpan(t * vocab, vocab), expected[t].Select(v => (float)v).ToArray(), 1e-4, $"{name} on {device} position {t}");
            }
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void Missing_or_misshapen_weights_are_named()
    {
        var (dir, _) = WriteModel(ShapeOf("tied"), seed: 5);
        try
        {
            // Claim untied embeddings: the checkpoint lacks lm_head.weight.
            string cfg = Path.Combine(dir, "config.json");
            File.WriteAllText(cfg, File.ReadAllText(cfg).Replace("\"tie_word_embeddings\": true", "\"tie_word_embeddings\": false"));
            var e = Assert.Throws<InvalidDataException>(() => LlamaModel.Load(TestDevices.CpuFast, dir));
            Assert.Contains("lm_head.weight", e.Message);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
