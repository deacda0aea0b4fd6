using System.CommandLine;

namespace LoraEngine.Cli;

/// <summary>Engine options shared by the commands, named as vLLM's flags.</summary>
internal sealed class CommonOptions
{
    public Option<string?> Model { get; } = new("--model") { Description = "Model folder (default: the shipped models/vim-tiny-bf16)" };
    public Option<string> Device { get; } = new("--device") { Description = "auto, cuda, opencl or cpu", DefaultValueFactory = _ => "auto" };
    public Option<string> Dtype { get; } = new("--dtype") { Description = "auto, float32, float16 or bfloat16", DefaultValueFactory = _ => "auto" };
    public Option<int?> MaxModelLen { get; } = new("--max-model-len") { Description = "Longest prompt + output" };
    public Option<int> MaxLoras { get; } = new("--max-loras") { Description = "Distinct adapters per step (GPU slots)", DefaultValueFactory = _ => 4 };
    public Option<int> MaxLoraRank { get; } = new("--max-lora-rank") { Description = "Largest adapter rank", DefaultValueFactory = _ => 16 };
    public Option<int?> MaxCpuLoras { get; } = new("--max-cpu-loras") { Description = "Adapters cached on the host" };
    public Option<int> MaxNumSeqs { get; } = new("--max-num-seqs") { Description = "Sequences per step", DefaultValueFactory = _ => 256 };
    public Option<double> GpuMemoryUtilization { get; } = new("--gpu-memory-utilization") { DefaultValueFactory = _ => 0.9 };
    public Option<int?> MaxPromptChars { get; } = new("--max-prompt-chars") { Description = "Longest prompt in characters, checked before tokenising (default 32 × max model len)" };
    public Option<int> MaxN { get; } = new("--max-n") { Description = "Largest n (sequences per request)", DefaultValueFactory = _ => 128 };
    public Option<int?> MaxRequestOutputTokens { get; } = new("--max-request-output-tokens") { Description = "Largest n × max_tokens of one request (default 16 × max model len)" };
    public Option<int> TensorParallelSize { get; } = new("--tensor-parallel-size", "-tp") { Description = "Devices to shard the model over: rank r on device r of --device's kind", DefaultValueFactory = _ => 1 };
    public Option<bool> FullyShardedLoras { get; } = new("--fully-sharded-loras") { Description = "Under tensor parallelism, split LoRA A of q/k/v/gate/up by rank rows and B of o/down by output rows too (vLLM's fully_sharded_loras)" };
    public Option<bool> EnforceEager { get; } = new("--enforce-eager") { Description = "Launch every kernel eagerly instead of replaying CUDA graphs of decode steps" };
    public Option<bool> EnablePrefixCaching { get; } = new("--enable-prefix-caching") { Description = "Reuse the KV blocks of prompt prefixes computed before, keyed by tokens and adapter content", DefaultValueFactory = _ => true };
    public Option<bool> NoEnablePrefixCaching { get; } = new("--no-enable-prefix-caching") { Description = "Compute every prompt in full (only the n sequences of one request share their prompt)" };

    public void AddTo(Command command)
    {
        foreach (var option in new Option[] { Model, Device, Dtype, MaxModelLen, MaxLoras, MaxLoraRank, MaxCpuLoras, MaxNumSeqs, GpuMemoryUtilization,
                     MaxPromptChars, MaxN, MaxRequestOutputTokens, TensorParallelSize, FullyShardedLoras, EnforceEager, EnablePrefixCaching, NoEnablePrefixCaching })
            command.Options.Add(option);
        command.Validators.Add(result =>
        {
            if (result.GetResult(EnablePrefixCaching) is { Implicit: false } && result.GetResult(NoEnablePrefixCaching) is { Implicit: false })
                result.AddError("--enable-prefix-caching and --no-enable-prefix-caching contradict each other: give one");
        });
    }

    public EngineArgs EngineArgs(ParseResult p) => new()
    {
        Model = p.GetValue(Model) ?? ShippedModel.DefaultModel(),
        Device = p.GetValue(Device)!,
        Dtype = p.GetValue(Dtype)!,
        MaxModelLen = p.GetValue(MaxModelLen),
        EnableLora = true,
        MaxLoras = p.GetValue(MaxLoras),
        MaxLoraRank = p.GetValue(MaxLoraRank),
        MaxCpuLoras = p.GetValue(MaxCpuLoras),
        MaxNumSeqs = p.GetValue(MaxNumSeqs),
        GpuMemoryUtilization = p.GetValue(GpuMemoryUtilization),
        MaxPromptChars = p.GetValue(MaxPromptChars),
        MaxN = p.GetValue(MaxN),
        MaxRequestOutputTokens = p.GetValue(MaxRequestOutputTokens),
        TensorParallelSize = p.GetValue(TensorParallelSize),
        FullyShardedLoras = p.GetValue(FullyShardedLoras),
        EnforceEager = p.GetValue(EnforceEager),
        EnablePrefixCaching = p.GetValue(EnablePrefixCaching) && !p.GetValue(NoEnablePrefixCaching),
    };

    /// <summary>"name=path", or a shipped adapter's name.</summary>
    public static (string Name, string Path) ParseLora(string value)
    {
        int eq = value.IndexOf('=');
        if (eq > 0) return (value[..eq], value[(eq + 1)..]);
        return ShippedModel.Adapters().TryGetValue(value, out var path)
            ? (value, path)
            : throw new ArgumentException($"--lora '{value}': use name=path, or one of the shipped adapters ({string.Join(", ", ShippedModel.Adapters().Keys)})");
    }
}
