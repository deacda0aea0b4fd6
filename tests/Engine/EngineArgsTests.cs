using LoraEngine.TestSupport;
using Xunit;

namespace LoraEngine.Engine.Tests;

public class EngineArgsTests
{
    static EngineArgs Valid => new() { Model = Fixtures.Model("vim-tiny") };

    [Fact]
    public void Defaults_follow_vllm_and_resolve_against_the_model()
    {
        var config = Valid.CreateEngineConfig();
        Assert.Equal(512, config.MaxModelLen);
        Assert.Equal(1, config.MaxCpuLoras);
        Assert.Equal(2048, config.MaxNumBatchedTokens);
        Assert.Equal(8192, Valid.CreateEngineConfig(UsageContext.LlmClass).MaxNumBatchedTokens);
        Assert.Equal(16, Valid.MaxLoraRank);
        Assert.Equal(256, Valid.MaxNumSeqs);
        Assert.Equal(0.9, Valid.GpuMemoryUtilization);
    }

    public static TheoryData<string, EngineArgs> BadArgs => new()
    {
        { "MaxLoraRank", Valid with { MaxLoraRank = 12 } },
        { "MaxCpuLoras", Valid with { MaxLoras = 4, MaxCpuLoras = 2 } },
        { "MaxNumSeqs", Valid with { MaxNumSeqs = 0 } },
        { "BlockSize", Valid with { BlockSize = -1 } },
        { "MaxLoras", Valid with { MaxLoras = 0 } },
        { "GpuMemoryUtilization", Valid with { GpuMemoryUtilization = 1.5 } },
        { "MaxModelLen", Valid with { MaxModelLen = 100_000 } },
        { "MaxNumBatchedTokens", Valid with { MaxNumBatchedTokens = 8 } },
        { "Device", Valid with { Device = "tpu" } },
        { "Dtype", Valid with { Dtype = "int8" } },
        { "LoraDtype", Valid with { LoraDtype = "fp4" } },
        { "MaxLogprobs", Valid with { MaxLogprobs = -5 } },
        { "TensorParallelSize", Valid with { TensorParallelSize = 0 } },
        { "TensorParallelSize", Valid with { TensorParallelSize = 3 } }, // vim-tiny's 8 heads
        { "MaxLoraRank", Valid with { TensorParallelSize = 2, EnableLora = true, FullyShardedLoras = true, MaxLoraRank = 1 } },
        { "Model", Valid with { Model = "/no/such/model" } },
    };

    [Theory]
    [MemberData(nameof(BadArgs))]
    public void Bad_values_throw_an_ArgumentException_naming_the_field(string field, EngineArgs args)
    {
        var e = Assert.ThrowsAny<ArgumentException>(() => args.CreateEngineConfig());
        Assert.Equal(field, e.ParamName);
    }

    [Fact]
    public void Max_cpu_loras_message_is_vllms()
    {
        var e = Assert.ThrowsAny<ArgumentException>(() => (Valid with { MaxLoras = 4, MaxCpuLoras = 2 }).CreateEngineConfig());
        Assert.Contains("max_cpu_loras (2) must be >= max_loras (4).", e.Message);
    }

    [Fact]
    public void Tensor_parallel_beyond_the_devices_is_refused()
    {
        var e = Assert.ThrowsAny<ArgumentException>(() => (Valid with { TensorParallelSize = 2 }).ValidateTensorParallel(1));
        Assert.Equal("TensorParallelSize", e.ParamName);
        Assert.Contains("TensorParallelSize (2) is greater than the 1 device(s) available", e.Message);
        (Valid with { TensorParallelSize = 2 }).ValidateTensorParallel(2);
    }

    [Fact]
    public void Tensor_parallel_sizes_that_do_not_split_the_model_name_the_width()
    {
        var e = Assert.ThrowsAny<ArgumentException>(() => (Valid with { TensorParallelSize = 3 }).CreateEngineConfig());
        Assert.Contains("TensorParallelSize (3) does not divide the model's num_attention_heads (8)", e.Message);
        var rank = Assert.ThrowsAny<ArgumentException>(() => (Valid with { TensorParallelSize = 2, EnableLora = true, FullyShardedLoras = true, MaxLoraRank = 1 }).CreateEngineConfig());
        Assert.Contains("must be a multiple of 2", rank.Message);
    }
}
