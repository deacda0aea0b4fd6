using LoraEngine.Lora;
using LoraEngine.Models;
using LoraEngine.Models.Llama;
using LoraEngine.Tensors;
using LoraEngine.TestSupport;
using Xunit;

namespace LoraEngine.Lora.Tests;

public class LoraLayersTests
{
    /// <summary>The Llama-3.2-1B shape of the issue: hidden 2048, 16 layers, MLP 8192, 8 KV heads of 64.</summary>
    internal static LlamaConfig Llama32_1B() => LlamaConfig.Parse("""
        {"architectures": ["LlamaForCausalLM"], "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
         "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 128256,
         "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": true,
         "torch_dtype": "bfloat16", "bos_token_id": 128000, "eos_token_id": 128001}
        """);

    [Fact]
    public void Slot_memory_formula_for_Llama_3_2_1B_at_4_slots_of_rank_16()
    {
        // Per layer Σ(in + out): q 2048+2048, k 2048+512, v 2048+512, o 2048+2048, gate/up 2048+8192, down 8192+2048 = 44032.
        // 16 layers × 44032 × 4 slots × rank 16 × 2 bytes (BF16) = 90,177,536 bytes, plus the shrink buffer: room for q/k/v's
        // three, each with every slot's columns (stacked: 4 × 16 ≤ 2048 / 8).
        long slots = 16L * 44032 * 4 * 16 * 2;
        Assert.Equal(90_177_536L, slots);
        Assert.Equal(slots + 3 * 4L * 256 * 4 * 16, LoraLayers.MemoryBytes(Llama32_1B(), 4, 16, DType.BF16, maxTokens: 256));
        Assert.Equal(2 * slots + 3 * 4L * 256 * 4 * 16, LoraLayers.MemoryBytes(Llama32_1B(), 4, 16, DType.F32, maxTokens: 256));
        // 32 slots of rank 16 (512 > 256 rows) are not stacked: one slot's columns.
        Assert.Equal(8 * slots + 3 * 4L * 256 * 16, LoraLayers.MemoryBytes(Llama32_1B(), 32, 16, DType.BF16, maxTokens: 256));
    }

    [Fact]
    public void Shrinks_are_stacked_only_for_few_slots_of_the_weights_dtype_on_one_device()
    {
        // vim-tiny: F32 weights, hidden 256, so at most 32 of slots × rank.
        foreach (var (slots, rank, dtype, stacked) in new[] { (2, 16, DType.F32, true), (3, 16, DType.F32, false), (2, 16, DType.BF16, false) })
        {
            using var model = LlamaModel.Load(TestDevices.CpuFast, Fixtures.Model("vim-tiny"));
            using var layers = LoraLayers.Wrap(model, slots, rank, dtype, maxTokens: 8);
            Assert.Equal(stacked, layers.StacksShrinks);
            Assert.Equal(stacked, LoraLayers.Stacks(model.Config, slots, rank, dtype, DType.F32, worldSize: 1));
            Assert.False(LoraLayers.Stacks(model.Config, slots, rank, dtype, DType.F32, worldSize: 2));
        }
    }
}
