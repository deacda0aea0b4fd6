using LoraEngine.TestSupport;
using Xunit;

namespace LoraEngine.Models.Tests;

public class LlamaConfigTests
{
    const string Base = """
        "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "vocab_size": 100, "max_position_embeddings": 256, "rms_norm_eps": 1e-6
        """;

    [Fact]
    public void Both_fixture_layouts_read_the_same()
    {
        var modern = LlamaConfig.Load(Fixtures.Model("vim-tiny"));
        var classic = LlamaConfig.Load(Fixtures.Model("vim-tiny-sharded"));
        Assert.Equal(256, modern.HiddenSize);
        Assert.Equal(4, modern.NumKeyValueHeads);
        Assert.Equal(32, modern.HeadDim);
        Assert.Equal(10000.0, modern.RopeTheta);
        Assert.Null(modern.RopeScaling);
        Assert.False(modern.TieWordEmbeddings);
        Assert.Equal("float32", modern.TorchDtype);
        foreach (var c in new[] { classic })
        {
            Assert.Equal(modern.HiddenSize, c.HiddenSize);
            Assert.Equal(modern.RopeTheta, c.RopeTheta);
            Assert.Equal(modern.HeadDim, c.HeadDim);
            Assert.Equal(modern.EosTokenIds, c.EosTokenIds);
            Assert.Equal(modern.BosTokenId, c.BosTokenId);
            Assert.Equal(modern.TorchDtype, c.TorchDtype);
        }
    }

    [Fact]
    public void Defaults_tied_mqa_head_dim_and_eos_lists()
    {
        var c = LlamaConfig.Parse("{" + Base + ", \"num_key_value_heads\": 1, \"head_dim\": 24, \"tie_word_embeddings\": true, \"eos_token_id\": [1, 7], \"rope_theta\": 500000.0}");
        Assert.Equal(1, c.NumKeyValueHeads);
        Assert.Equal(24, c.HeadDim);
        Assert.Equal(96, c.QSize);
        Assert.Equal(24, c.KvSize);
        Assert.True(c.TieWordEmbeddings);
        Assert.Equal([1, 7], c.EosTokenIds);
        Assert.Equal(500000.0, c.RopeTheta);
        var d = LlamaConfig.Parse("{" + Base + "}");
        Assert.Equal(4, d.NumKeyValueHeads);
        Assert.Equal(16, d.HeadDim);
        var g = LlamaConfig.Parse("{" + Base + ", \"eos_token_id\": 1}", "{\"eos_token_id\": [5, 6], \"bos_token_id\": 3}");
        Assert.Equal([5, 6], g.EosTokenIds);
        Assert.Equal(3, g.BosTokenId);
    }

    [Fact]
    public void Llama3_rope_scaling_in_both_layouts()
    {
        const string scaling = "\"rope_type\": \"llama3\", \"factor\": 32.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192";
        var modern = LlamaConfig.Parse("{" + Base + ", \"rope_parameters\": {\"rope_theta\": 500000.0, " + scaling + "}}");
        var classic = LlamaConfig.Parse("{" + Base + ", \"rope_theta\": 500000.0, \"rope_scaling\": {" + scaling.Replace("\"rope_type\"", "\"type\"") + "}}");
        Assert.Equal(new Tensors.Llama3RopeScaling(32, 1, 4, 8192), modern.RopeScaling);
        Assert.Equal(modern.RopeScaling, classic.RopeScaling);
        Assert.Equal(500000.0, classic.RopeTheta);
    }

    [Fact]
    public void Unsupported_and_garbled_configs_are_named()
    {
        Assert.Contains("MistralForCausalLM", Assert.Throws<NotSupportedException>(() => LlamaConfig.Parse("{" + Base.Replace("LlamaForCausalLM", "MistralForCausalLM") + "}")).Message);
        Assert.Contains("yarn", Assert.Throws<NotSupportedException>(() => LlamaConfig.Parse("{" + Base + ", \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4}}")).Message);
        Assert.Contains("hidden_size", Assert.Throws<InvalidDataException>(() => LlamaConfig.Parse("{" + Base.Replace("\"hidden_size\": 64,", "") + "}")).Message);
        Assert.Contains("num_key_value_heads", Assert.Throws<InvalidDataException>(() => LlamaConfig.Parse("{" + Base + ", \"num_key_value_heads\": 3}")).Message);
        Assert.Contains("intermediate_size", Assert.Throws<InvalidDataException>(() => LlamaConfig.Parse("{" + Base.Replace("128", "\"big\"") + "}")).Message);
        Assert.Throws<InvalidDataException>(() => LlamaConfig.Parse("{not json"));
    }

    [Fact]
    public void A_tensor_parallel_shard_holds_its_heads_kv_heads_and_mlp_columns()
    {
        var c = LlamaConfig.Load(Fixtures.Model("vim-tiny")); // 8 heads, 4 KV heads, MLP 688
        var shard = c.ShardFor(2);
        Assert.Equal((4, 2, 344), (shard.NumAttentionHeads, shard.NumKeyValueHeads, shard.IntermediateSize));
        Assert.Equal((c.HiddenSize, c.HeadDim, c.VocabSize, c.NumHiddenLayers), (shard.HiddenSize, shard.HeadDim, shard.VocabSize, shard.NumHiddenLayers));
        Assert.Same(c, c.ShardFor(1));
    }

    [Theory]
    [InlineData(3, "num_attention_heads (8)")]
    [InlineData(8, "num_key_value_heads (4)")] // KV heads are split, never replicated: GQA groups stay whole on a rank
    [InlineData(0, "must be positive")]
    public void Tensor_parallel_sizes_that_do_not_split_the_model_evenly_are_refused(int ranks, string named)
    {
        var c = LlamaConfig.Load(Fixtures.Model("vim-tiny"));
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => c.ShardFor(ranks));
        Assert.Equal("TensorParallelSize", e.ParamName);
        Assert.Contains(named, e.Message);
        var odd = Assert.Throws<ArgumentOutOfRangeException>(() => (c with { IntermediateSize = 690 }).CheckTensorParallel(4));
        Assert.Contains("intermediate_size (690)", odd.Message);
    }
}
