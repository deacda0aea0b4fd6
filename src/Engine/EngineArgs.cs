using LoraEngine.Models;
using LoraEngine.Tensors;
using Microsoft.Extensions.Logging;

namespace LoraEngine;

/// <summary>
/// Everything needed to build an engine, with vLLM's names (in .NET casing) and defaults.
/// <see cref="CreateEngineConfig"/> validates it and resolves the defaults that depend on the model.
/// </summary>
public sealed record EngineArgs
{
    /// <summary>Allowed LoRA ranks (vLLM's LoRAConfig.max_lora_rank).</summary>
    public static readonly IReadOnlyList<int> AllowedLoraRanks = [1, 8, 16, 32, 64, 128, 256, 320, 512];

    /// <summary>Folder of the Hugging Face checkpoint (config.json, safetensors, tokenizer.json).</summary>
    public required string Model { get; init; }
    /// <summary>"auto" (CUDA, else an OpenCL GPU, else the CPU), "cuda", "opencl" or "cpu".</summary>
    public string Device { get; init; } = "auto";
    /// <summary>Weight dtype on the device: "auto" keeps the stored dtype; "float32", "float16", "bfloat16".</summary>
    public string Dtype { get; init; } = "auto";
    /// <summary>Longest prompt + output; defaults to the model's max_position_embeddings.</summary>
    public int? MaxModelLen { get; init; }
    /// <summary>Most sequences running at once (vLLM's max_num_seqs); a request with n &gt; 1 counts n. Default 256.</summary>
    public int MaxNumSeqs { get; init; } = 256;
    /// <summary>Token budget of one step; default 8192 for <see cref="UsageContext.LlmClass"/>, 2048 otherwise (vLLM's).</summary>
    public int? MaxNumBatchedTokens { get; init; }
    /// <summary>Token positions per KV-cache block. Default 16.</summary>
    public int BlockSize { get; init; } = 16;
    /// <summary>
    /// vLLM's enable_prefix_caching (on by default, as in vLLM's V1 engine): full KV blocks stay findable by a hash of
    /// their tokens, the tokens before them and the adapter's content identity, so a request whose prompt begins as an
    /// earlier one did (a system prompt, few-shot examples, a chat's earlier turns) computes only the rest. Off, only the
    /// n sequences of one request share their prompt's blocks.
    /// </summary>
    public bool EnablePrefixCaching { get; init; } = true;
    /// <summary>Fraction of device memory the engine may use for weights, LoRA slots, activations and the KV pool.</summary>
    public double GpuMemoryUtilization { get; init; } = 0.9;
    /// <summary>Seed for requests that give none.</summary>
    public int Seed { get; init; }
    /// <summary>Wraps the model's projections in LoRA layers and reserves <see cref="MaxLoras"/> slots; without it a request naming an adapter is refused.</summary>
    public bool EnableLora { get; init; }

    /// <summary>vLLM's enforce_eager: launch every kernel of every step eagerly instead of replaying CUDA graphs of decode steps.</summary>
    public bool EnforceEager { get; init; }
    /// <summary>Distinct adapters in one step (= GPU slots).</summary>
    public int MaxLoras { get; init; } = 1;
    /// <summary>The largest adapter rank accepted, one of <see cref="AllowedLoraRanks"/>; sizes every slot. Default 16.</summary>
    public int MaxLoraRank { get; init; } = 16;
    /// <summary>Adapters kept loaded on the host; defaults to <see cref="MaxLoras"/>.</summary>
    public int? MaxCpuLoras { get; init; }
    /// <summary>The dtype of the LoRA slots: "auto" (the weights' dtype), "float32", "float16", "bfloat16".</summary>
    public string LoraDtype { get; init; } = "auto";
    /// <summary>
    /// vLLM's fully_sharded_loras: under tensor parallelism the column-parallel projections (q, k, v, gate, up) split
    /// LoRA A by rank rows too, each rank computing its share of the shrink, and all-gather the shrink before the
    /// expand (by default A is whole on every rank and only B is split); the row-parallel ones (o, down) split B by
    /// output rows too, all-reducing the shrink. MaxLoraRank and the hidden size must then be multiples of
    /// TensorParallelSize. With one device there is nothing to shard and it changes nothing.
    /// </summary>
    public bool FullyShardedLoras { get; init; }
    /// <summary>
    /// Devices to shard the model over (vLLM's tensor_parallel_size): rank r runs on device r of the kind
    /// <see cref="Device"/> names, each holding its share of the heads (q/k/v, KV cache) and MLP columns. Must divide
    /// the model's attention heads, KV heads and intermediate size, and be at most the devices available.
    /// </summary>
    public int TensorParallelSize { get; init; } = 1;
    /// <summary>Largest logprobs / prompt_logprobs k a request may ask; -1: the whole vocabulary.</summary>
    public int MaxLogprobs { get; init; } = 20;
    /// <summary>Turns off the periodic stats line in the log; metrics are still recorded.</summary>
    public bool DisableLogStats { get; init; }
    /// <summary>Fixes the number of KV blocks instead of sizing the pool from memory (vLLM's num_gpu_blocks_override).</summary>
    public int? NumGpuBlocksOverride { get; init; }
    /// <summary>On the CPU device, the KV pool's byte budget (vLLM's VLLM_CPU_KVCACHE_SPACE); default 4 GiB.</summary>
    public long CpuKvCacheBytes { get; init; } = 4L << 30;
    /// <summary>
    /// Longest prompt, in characters, a request may give as text; checked before tokenising so an oversized prompt costs
    /// nothing. Default 32 × MaxModelLen, far above the 3–5 characters per token of text and code.
    /// </summary>
    public int? MaxPromptChars { get; init; }
    /// <summary>Largest n (sequences generated for one prompt) a request may ask; default 128, OpenAI's limit.</summary>
    public int MaxN { get; init; } = 128;
    /// <summary>
    /// Largest n × max_tokens of one request (a request without max_tokens counts the rest of the context), so one
    /// request cannot occupy the engine for everyone else; default 16 × MaxModelLen.
    /// </summary>
    public int? MaxRequestOutputTokens { get; init; }
    /// <summary>Where the engine logs (stats lines every few seconds, adapter loads); none by default.</summary>
    public ILoggerFactory? LoggerFactory { get; init; }

    /// <summary>Validates every field and resolves defaults against the model's config.json.</summary>
    public EngineConfig CreateEngineConfig(UsageContext usageContext = UsageContext.EngineContext)
    {
        if (string.IsNullOrWhiteSpace(Model)) throw new ArgumentException("Model must name a model folder", nameof(Model));
        string device = Device?.Trim().ToLowerInvariant() ?? "";
        if (device is not ("auto" or "cuda" or "opencl" or "cpu"))
            throw new ArgumentException($"Device '{Device}' is not one of auto, cuda, opencl, cpu", nameof(Device));
        DType? dtype = ParseDtype(Dtype, nameof(Dtype));
        DType? loraDtype = ParseDtype(LoraDtype, nameof(LoraDtype));
        Positive(MaxNumSeqs, nameof(MaxNumSeqs));
        Positive(BlockSize, nameof(BlockSize));
        Positive(MaxLoras, nameof(MaxLoras));
        Positive(TensorParallelSize, nameof(TensorParallelSize));
        if (MaxModelLen is int len) Positive(len, nameof(MaxModelLen));
        if (MaxNumBatchedTokens is int budget) Positive(budget, nameof(MaxNumBatchedTokens));
        if (NumGpuBlocksOverride is int blocks) Positive(blocks, nameof(NumGpuBlocksOverride));
        if (MaxPromptChars is int chars) Positive(chars, nameof(MaxPromptChars));
        Positive(MaxN, nameof(MaxN));
        if (MaxRequestOutputTokens is int outputTokens) Positive(outputTokens, nameof(MaxRequestOutputTokens));
        if (CpuKvCacheBytes <= 0) throw new ArgumentOutOfRangeException(nameof(CpuKvCacheBytes), CpuKvCacheBytes, "CpuKvCacheBytes must be positive");
        if (!(GpuMemoryUtilization > 0 && GpuMemoryUtilization <= 1))
            throw new ArgumentOutOfRangeException(nameof(GpuMemoryUtilization), GpuMemoryUtilization, $"GpuMemoryUtilization must be in (0, 1], got {GpuMemoryUtilization}");
        if (!AllowedLoraRanks.Contains(MaxLoraRank))
            throw new ArgumentOutOfRangeException(nameof(MaxLoraRank), MaxLoraRank, $"MaxLoraRank ({MaxLoraRank}) must be one of {string.Join(", ", AllowedLoraRanks)}");
        int maxCpuLoras = MaxCpuLoras ?? MaxLoras;
        if (maxCpuLoras < MaxLoras)
            throw new ArgumentOutOfRangeException(nameof(MaxCpuLoras), maxCpuLoras, $"max_cpu_loras ({maxCpuLoras}) must be >= max_loras ({MaxLoras}).");
        if (MaxLogprobs < -1) throw new ArgumentOutOfRangeException(nameof(MaxLogprobs), MaxLogprobs, "MaxLogprobs must be -1 (whole vocabulary) or non-negative");

        if (!Directory.Exists(Model))
            throw new ArgumentException(File.Exists(Model) ? $"Model '{Model}' is a file: give the model's folder (its config.json and safetensors)" : $"Model folder '{Model}' does not exist", nameof(Model));
        var model = LlamaConfig.Load(Model);
        model.CheckTensorParallel(TensorParallelSize);
        if (EnableLora && FullyShardedLoras && MaxLoraRank % TensorParallelSize != 0)
            throw new ArgumentOutOfRangeException(nameof(MaxLoraRank), MaxLoraRank,
                $"FullyShardedLoras splits MaxLoraRank ({MaxLoraRank}) over TensorParallelSize ({TensorParallelSize}) ranks: it must be a multiple of {TensorParallelSize}");
        if (EnableLora && FullyShardedLoras && model.HiddenSize % TensorParallelSize != 0)
            throw new ArgumentOutOfRangeException(nameof(TensorParallelSize), TensorParallelSize,
                $"FullyShardedLoras splits the output rows of o_proj's and down_proj's LoRA B: TensorParallelSize ({TensorParallelSize}) must divide hidden_size ({model.HiddenSize})");
        int maxModelLen = MaxModelLen ?? model.MaxPositionEmbeddings;
        if (maxModelLen > model.MaxPositionEmbeddings)
            throw new ArgumentOutOfRangeException(nameof(MaxModelLen), maxModelLen,
                $"MaxModelLen ({maxModelLen}) is greater than the model's max_position_embeddings ({model.MaxPositionEmbeddings})");
        int batched = MaxNumBatchedTokens ?? (usageContext == UsageContext.LlmClass ? 8192 : 2048);
        if (batched < MaxNumSeqs)
            throw new ArgumentOutOfRangeException(nameof(MaxNumBatchedTokens), batched,
                $"MaxNumBatchedTokens ({batched}) must be greater than or equal to MaxNumSeqs ({MaxNumSeqs})");

        return new EngineConfig(this, model, device, dtype, loraDtype, maxModelLen, batched, maxCpuLoras, usageContext);
    }

    /// <summary>The device-count check that needs the executor's devices: one rank per device.</summary>
    public void ValidateTensorParallel(int deviceCount)
    {
        if (TensorParallelSize > deviceCount)
            throw new ArgumentOutOfRangeException(nameof(TensorParallelSize), TensorParallelSize,
                $"TensorParallelSize ({TensorParallelSize}) is greater than the {deviceCount} device(s) available");
    }

    static DType? ParseDtype(string value, string field)
    {
        if (value?.Trim().ToLowerInvariant() is "auto") return null;
        try
        {
            var d = DTypeExtensions.Parse(value ?? "");
            return d.IsFloat() ? d : throw new ArgumentException($"{field} '{value}' is not a float type", field);
        }
        catch (ArgumentException)
        {
            throw new ArgumentException($"{field} '{value}' is not one of auto, float32, float16, bfloat16", field);
        }
    }

    static void Positive(int value, string field)
    {
        if (value <= 0) throw new ArgumentOutOfRangeException(field, value, $"{field} must be positive, got {value}");
    }
}

/// <summary>The validated configuration an engine is built from: the arguments with every default resolved.</summary>
public sealed record EngineConfig(
    EngineArgs Args,
    LlamaConfig ModelConfig,
    string Device,
    DType? Dtype,
    DType? LoraDtype,
    int MaxModelLen,
    int MaxNumBatchedTokens,
    int MaxCpuLoras,
    UsageContext UsageContext)
{
    /// <summary><see cref="EngineArgs.MaxPromptChars"/> resolved: 32 characters per token of the context by default.</summary>
    public int MaxPromptChars => Args.MaxPromptChars ?? (int)Math.Min(int.MaxValue, 32L * MaxModelLen);

    /// <summary><see cref="EngineArgs.MaxRequestOutputTokens"/> resolved: 16 contexts' worth by default.</summary>
    public int MaxRequestOutputTokens => Args.MaxRequestOutputTokens ?? (int)Math.Min(int.MaxValue, 16L * MaxModelLen);
}
