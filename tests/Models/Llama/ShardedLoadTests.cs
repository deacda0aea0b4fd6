using LoraEngine.Models.Llama;
using LoraEngine.Models.Safetensors;
using LoraEngine.Tensors;
using LoraEngine.Tensors.Distributed;
using LoraEngine.TestSupport;
using Xunit;

namespace LoraEngine.Models.Tests.Llama;

/// <summary>
/// A tensor-parallel rank loads exactly its share of each weight: its rows of q/k/v/gate/up, its columns of o/down,
/// the embedding and norms whole, no lm_head except on rank 0 — in the stored dtype or converted (the column slices
/// go through the chunked staging path).
/// </summary>
public class ShardedLoadTests
{
    /// <summary>A rank of a group whose collectives must not be called while loading.</summary>
    sealed class LoadOnly(int rank, int worldSize) : ICommunicator
    {
        public int Rank => rank;
        public int WorldSize => worldSize;
        public void AllReduceSum(DeviceTensor tensor) => throw new InvalidOperationException("no collective while loading");
        public void AllGather(DeviceTensor output, DeviceTensor input) => throw new InvalidOperationException("no collective while loading");
    }

    static float[] Rows(float[] m, int width, int start, int count) => m.AsSpan(start * width, count * width).ToArray();

    static float[] Columns(float[] m, int width, int start, int count) =>
        Enumerable.Range(0, m.Length / width).SelectMany(r => m.AsSpan(r * width + start, count).ToArray()).ToArray();

    [Theory]
    [InlineData("vim-tiny", null)]
    [InlineData("vim-tiny", DType.BF16)]
    [InlineData("vim-tiny-bf16", null)]
    [InlineData("vim-tiny-bf16", DType.F16)]
    public void Rank_one_of_two_holds_its_rows_and_columns(string modelName, DType? dtype)
    {
        var device = TestDevices.CpuFast;
        var config = LlamaConfig.Load(Fixtures.Model(modelName));
        using var checkpoint = SafetensorsCheckpoint.Open(Fixtures.Model(modelName));
        using var whole = LlamaModel.Load(device, config, checkpoint, dtype);
        using var rank1 = LlamaModel.Load(device, config, checkpoint, dtype, new LoadOnly(1, 2));

        Assert.Equal((4, 2, 344), (rank1.ShardConfig.NumAttentionHeads, rank1.ShardConfig.NumKeyValueHeads, rank1.ShardConfig.IntermediateSize));
        Assert.Null(rank1.LmHead);
        Assert.Equal(whole.EmbedTokens.ToFloatArray(), rank1.EmbedTokens.ToFloatArray());
        for (int l = 0; l < config.NumHiddenLayers; l += 5)
        {
            var (w, s) = (whole.Layers[l], rank1.Layers[l]);
            float[] Of(ILinear linear) => ((DenseLinear)linear).Weight.ToFloatArray();
            Assert.Equal(s.QProj.BaseWeight.DType, w.QProj.BaseWeight.DType);
            Assert.Equal(Rows(Of(w.QProj), 256, 128, 128), Of(s.QProj));       // heads 4..7
            Assert.Equal(Rows(Of(w.KProj), 256, 64, 64), Of(s.KProj));         // KV heads 2..3
            Assert.Equal(Rows(Of(w.VProj), 256, 64, 64), Of(s.VProj));
            Assert.Equal(Rows(Of(w.GateProj), 256, 344, 344), Of(s.GateProj));
            Assert.Equal(Rows(Of(w.UpProj), 256, 344, 344), Of(s.UpProj));
            Assert.Equal(Columns(Of(w.OProj), 256, 128, 128), Of(s.OProj));    // o's inputs from heads 4..7
            Assert.Equal(Columns(Of(w.DownProj), 688, 344, 344), Of(s.DownProj));
            Assert.Equal(w.InputLayerNorm.ToFloatArray(), s.InputLayerNorm.ToFloatArray());
        }
        Assert.True(rank1.WeightBytes < whole.WeightBytes * 0.6, $"rank 1 holds {rank1.WeightBytes} bytes of {whole.WeightBytes}");
    }

    [Fact]
    public void A_rank_without_lm_head_refuses_to_compute_logits()
    {
        using var checkpoint = SafetensorsCheckpoint.Open(Fixtures.Model("vim-tiny"));
        using var model = LlamaModel.Load(TestDevices.CpuFast, LlamaConfig.Load(Fixtures.Model("vim-tiny")), checkpoint, null, new LoadOnly(1, 2));
        var e = Assert.Throws<InvalidOperationException>(() => model.ComputeLogits(model.Norm, model.Norm, null!));
        Assert.Contains("rank 1 holds no lm_head", e.Message);
    }

    [Fact]
    public void A_group_that_does_not_split_the_heads_is_refused_before_loading()
    {
        var config = LlamaConfig.Load(Fixtures.Model("vim-tiny"));
        using var checkpoint = SafetensorsCheckpoint.Open(Fixtures.Model("vim-tiny"));
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => LlamaModel.Load(TestDevices.CpuFast, config, checkpoint, null, new LoadOnly(0, 3)));
        Assert.Contains("num_attention_heads (8)", e.Message);
    }
}
