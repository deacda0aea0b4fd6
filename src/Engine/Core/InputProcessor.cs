using System.Diagnostics;
using LoraEngine.Lora;
using LoraEngine.Models.Tokenization;
using Microsoft.Extensions.Logging;

namespace LoraEngine.Core;

/// <summary>A request checked, tokenised and holding its validated adapter: what the engine core schedules (vLLM's EngineCoreRequest).</summary>
internal sealed record EngineCoreRequest(
    string RequestId,
    string? Prompt,
    IReadOnlyList<int> PromptTokenIds,
    SamplingParams SamplingParams,
    LoraRequest? LoraRequest,
    LoraAdapter? Adapter,
    string? CacheSalt = null);

/// <summary>
/// Turns what a caller asks into an <see cref="EngineCoreRequest"/> on the caller's thread, outside the step (vLLM's
/// Processor): parameters and limits checked (cheap checks first, the prompt's length before tokenising), the prompt
/// tokenised, and the adapter taken from the CPU cache or read from disk now. Everything wrong throws here, before
/// anything is queued: ArgumentException naming the parameter, LoraException for the adapter.
/// </summary>
internal sealed class InputProcessor(EngineConfig config, HfTokenizer tokenizer, LoraManager? loraManager, ILogger logger)
{
    public EngineCoreRequest Process(string requestId, string? prompt, IReadOnlyList<int>? promptTokenIds, SamplingParams samplingParams, LoraRequest? loraRequest,
        string? cacheSalt = null)
    {
        if (string.IsNullOrEmpty(requestId)) throw new ArgumentException("request id must not be empty", nameof(requestId));
        if (cacheSalt is { Length: 0 }) throw new ArgumentException("Parameter 'cache_salt' must be a non-empty string if provided.", nameof(cacheSalt));
        ArgumentNullException.ThrowIfNull(samplingParams);
        samplingParams.Validate(config.Args.MaxLogprobs, config.ModelConfig.VocabSize);
        if (samplingParams.N > config.Args.MaxN)
            throw new ArgumentException($"n must be at most {config.Args.MaxN} (max_n), got {samplingParams.N}.", nameof(SamplingParams.N));
        if (prompt != null) CheckPromptLength(prompt);
        loraRequest?.Validate();
        if (loraRequest != null && loraManager is null)
            throw new ArgumentException($"LoRA adapter '{loraRequest.LoraName}' requested but LoRA is not enabled (set EnableLora)", "loraRequest");

        var ids = prompt != null ? Tokenize(prompt) : promptTokenIds!.ToArray();
        CheckPrompt(ids, prompt is null);
        long outputTokens = (long)samplingParams.N * (samplingParams.MaxTokens ?? config.MaxModelLen - ids.Length);
        if (outputTokens > config.MaxRequestOutputTokens)
            throw new ArgumentException($"n × max_tokens is {outputTokens}, more than the {config.MaxRequestOutputTokens} tokens one request may ask (max_request_output_tokens); lower n or max_tokens.",
                samplingParams.MaxTokens is null ? nameof(SamplingParams.N) : nameof(SamplingParams.MaxTokens));
        var adapter = loraRequest is null ? null : LoadAdapter(loraRequest);
        return new EngineCoreRequest(requestId, prompt, ids, samplingParams, loraRequest, adapter, cacheSalt);
    }

    /// <summary>Refuses a prompt longer than max_prompt_chars: call it before tokenising anything.</summary>
    public void CheckPromptLength(string prompt)
    {
        if (prompt.Length > config.MaxPromptChars)
            throw new ArgumentException($"The prompt has {prompt.Length} characters, more than the {config.MaxPromptChars} allowed (max_prompt_chars).", "prompt");
    }

    /// <summary>BOS prepended as the tokenizer's post-processor would, unless the text already starts with it.</summary>
    int[] Tokenize(string prompt) =>
        tokenizer.Encode(prompt, addSpecialTokens: !prompt.StartsWith(tokenizer.BosToken ?? "\0", StringComparison.Ordinal)).ToArray();

    void CheckPrompt(int[] ids, bool givenAsIds)
    {
        if (ids.Length == 0) throw new ArgumentException("the prompt is empty", "prompt");
        if (ids.Length >= config.MaxModelLen)
            throw new ArgumentException($"The prompt (length {ids.Length}) is longer than the maximum model length of {config.MaxModelLen}.", "prompt");
        if (!givenAsIds) return;
        foreach (int id in ids)
            if (id < 0 || id >= config.ModelConfig.VocabSize)
                throw new ArgumentException($"token id {id} is outside the vocabulary [0, {config.ModelConfig.VocabSize})", "promptTokenIds");
    }

    /// <summary>The adapter's validated host copy: cached, or read from disk now (confined to its LoraRoot, if any).</summary>
    public LoraAdapter LoadAdapter(LoraRequest lora)
    {
        if (loraManager is null) throw new ArgumentException($"LoRA adapter '{lora.LoraName}' requested but LoRA is not enabled (set EnableLora)", "loraRequest");
        lora.Validate();
        var sw = Stopwatch.StartNew();
        bool cached = loraManager.IsLoaded(lora.LoraIntId);
        var adapter = loraManager.Load(lora.LoraName, lora.LoraIntId, lora.LoraPath, lora.LoraRoot, replace: lora.LoadInplace);
        if (!cached || lora.LoadInplace)
            logger.LogInformation("Loaded LoRA adapter '{Name}' (id {Id}) from {Path} in {Ms:F0} ms", lora.LoraName, lora.LoraIntId, lora.LoraPath, sw.Elapsed.TotalMilliseconds);
        return adapter;
    }
}
