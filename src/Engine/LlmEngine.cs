using System.Diagnostics;
using LoraEngine.Core;
using LoraEngine.Execution;
using LoraEngine.Lora;
using LoraEngine.Metrics;
using LoraEngine.Models;
using LoraEngine.Models.Llama;
using LoraEngine.Models.Safetensors;
using LoraEngine.Models.Tokenization;
using LoraEngine.Tensors;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace LoraEngine;

/// <summary>
/// vLLM's LLMEngine in .NET: add requests (each with its own adapter or none), then call <see cref="Step"/> until
/// none is unfinished. A step is one sentence: schedule, execute, update. Thread-safe: requests may be added or
/// aborted from other threads while one thread steps; loading an adapter from disk happens outside the step lock.
/// </summary>
public sealed class LlmEngine : IDisposable
{
    readonly object _lock = new();
    readonly ComputeDevice _device;
    readonly LlamaModel _model;
    readonly LoraLayers? _loraLayers;
    readonly ModelExecutor _executor;
    readonly Scheduler _scheduler;
    readonly OutputProcessor _outputs;
    readonly Dictionary<string, Request> _requests = new();
    readonly IReadOnlyList<IStatLogger> _statLoggers;
    readonly ILogger _logger;
    readonly HashSet<int> _eosIds;
    long _arrivals;
    long _preemptions;
    bool _disposed;

    LlmEngine(EngineConfig config, ComputeDevice device, LlamaModel model, LoraLayers? loraLayers, LoraManager? loraManager,
        ModelExecutor executor, MemoryPlan plan, HfTokenizer tokenizer, IReadOnlyList<IStatLogger> statLoggers, EngineMetrics metrics, ILogger logger)
    {
        Config = config;
        _device = device;
        _model = model;
        _loraLayers = loraLayers;
        LoraManager = loraManager;
        _executor = executor;
        MemoryPlan = plan;
        Tokenizer = tokenizer;
        _statLoggers = statLoggers;
        Metrics = metrics;
        _logger = logger;
        _eosIds = [.. config.ModelConfig.EosTokenIds, .. tokenizer.EosTokenIds];
        _scheduler = new Scheduler(new BlockAllocator(plan.KvBlocks), config.Args.BlockSize, config.Args.MaxNumSeqs, config.MaxNumBatchedTokens, config.Args.MaxLoras);
        _outputs = new OutputProcessor(tokenizer, _eosIds, config.MaxModelLen);
    }

    public EngineConfig Config { get; }

    public LlamaConfig ModelConfig => Config.ModelConfig;

    public HfTokenizer Tokenizer { get; }

    public MemoryPlan MemoryPlan { get; }

    public EngineMetrics Metrics { get; }

    /// <summary>The device the engine runs on.</summary>
    public string DeviceName => _device.ToString();

    internal LoraManager? LoraManager { get; }

    /// <summary>
    /// Builds an engine in vLLM's seven stages: config, executor (device), model (with LoRA-wrapped linears when
    /// EnableLora), LoRA manager (slots + CPU cache), worker (KV cache and step buffers), input/output processors
    /// (tokenizer), stats logging.
    /// </summary>
    /// <param name="enableMultiprocessing">
    /// Accepted for vLLM compatibility. The engine core always runs in-process; <see cref="AsyncLlmEngine"/> runs it off
    /// the caller's thread behind a queue, which is what multiprocessing buys in vLLM.
    /// </param>
    public static LlmEngine FromEngineArgs(EngineArgs engineArgs, UsageContext usageContext = UsageContext.EngineContext,
        IReadOnlyList<IStatLoggerFactory>? statLoggers = null, bool enableMultiprocessing = false)
    {
        ArgumentNullException.ThrowIfNull(engineArgs);
        // 1. Config creation and validation.
        var config = engineArgs.CreateEngineConfig(usageContext);
        var loggerFactory = engineArgs.LoggerFactory ?? NullLoggerFactory.Instance;
        var logger = loggerFactory.CreateLogger<LlmEngine>();

        // 2. Executor selection by hardware.
        var device = ComputeDevice.Create(config.Device);
        var owned = new List<IDisposable> { device };
        try
        {
            engineArgs.ValidateTensorParallel(deviceCount: 1);

            // 3. Model load (memory planned first so a model that cannot fit fails before anything is uploaded).
            var tokenizer = HfTokenizer.Load(engineArgs.Model);
            LlamaModel model;
            MemoryPlan plan;
            using (var checkpoint = SafetensorsCheckpoint.Open(engineArgs.Model))
            {
                var weightDType = config.Dtype ?? StoredDType(checkpoint);
                var loraDType = config.LoraDtype ?? weightDType;
                plan = MemoryPlan.Create(config, device, checkpoint, weightDType, loraDType);
                model = LlamaModel.Load(device, config.ModelConfig, checkpoint, config.Dtype);
                owned.Add(model);
            }
            logger.LogInformation("Loaded {Model} on {Device}: {Plan}", engineArgs.Model, device, plan);

            // 4. LoRA manager: slots reserved up front, wrapped linears, CPU cache.
            LoraLayers? loraLayers = null;
            LoraManager? loraManager = null;
            if (engineArgs.EnableLora)
            {
                var loraDType = config.LoraDtype ?? model.WeightDType;
                loraLayers = LoraLayers.Wrap(model, engineArgs.MaxLoras, engineArgs.MaxLoraRank, loraDType, config.MaxNumBatchedTokens);
                owned.Add(loraLayers);
                loraManager = new LoraManager(loraLayers, config.ModelConfig, config.MaxCpuLoras);
            }

            // 5. Worker: KV cache and step buffers.
            var executor = new ModelExecutor(model, loraLayers, config.MaxNumBatchedTokens, engineArgs.MaxNumSeqs, config.MaxModelLen,
                engineArgs.BlockSize, plan.KvBlocks, engineArgs.EnforceEager, loggerFactory.CreateLogger<ModelExecutor>());
            owned.Add(executor);

            // 6. Input/output processors live in the engine (tokenizer above, OutputProcessor in the constructor).
            // 7. Stats logging.
            var metrics = new EngineMetrics();
            var loggers = new List<IStatLogger> { metrics };
            if (!engineArgs.DisableLogStats) loggers.Add(new LoggingStatLogger(logger));
            foreach (var factory in statLoggers ?? []) loggers.Add(factory.Create(config));
            return new LlmEngine(config, device, model, loraLayers, loraManager, executor, plan, tokenizer, loggers, metrics, logger);
        }
        catch
        {
            for (int i = owned.Count - 1; i >= 0; i--) owned[i].Dispose();
            throw;
        }
    }

    static DType StoredDType(SafetensorsCheckpoint checkpoint) =>
        checkpoint.Names.Select(n => checkpoint.Info(n).DType).FirstOrDefault(d => d is "F32" or "F16" or "BF16") switch
        {
            "F16" => DType.F16,
            "BF16" => DType.BF16,
            _ => DType.F32,
        };

    public bool HasUnfinishedRequests
    {
        get { lock (_lock) return _scheduler.HasUnfinished; }
    }

    /// <summary>KV blocks in use (0 once every request finished or was aborted).</summary>
    public int NumUsedKvBlocks
    {
        get { lock (_lock) return _scheduler.Blocks.NumUsed; }
    }

    /// <summary>Adapter slot pins held by running requests (0 when none runs).</summary>
    public int NumLoraPins => LoraManager?.TotalPins ?? 0;

    /// <summary>Adds a request given as text (BOS prepended as the tokenizer's post-processor would).</summary>
    public void AddRequest(string requestId, string prompt, SamplingParams samplingParams, LoraRequest? loraRequest = null)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        var ids = Tokenizer.Encode(prompt, addSpecialTokens: !prompt.StartsWith(Tokenizer.BosToken ?? "\0", StringComparison.Ordinal));
        Add(requestId, prompt, ids, samplingParams, loraRequest);
    }

    /// <summary>Adds a request given as token ids.</summary>
    public void AddRequest(string requestId, IReadOnlyList<int> promptTokenIds, SamplingParams samplingParams, LoraRequest? loraRequest = null)
    {
        ArgumentNullException.ThrowIfNull(promptTokenIds);
        Add(requestId, null, promptTokenIds.ToArray(), samplingParams, loraRequest);
    }

    void Add(string requestId, string? prompt, IReadOnlyList<int> ids, SamplingParams samplingParams, LoraRequest? loraRequest)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (string.IsNullOrEmpty(requestId)) throw new ArgumentException("request id must not be empty", nameof(requestId));
        ArgumentNullException.ThrowIfNull(samplingParams);
        samplingParams.Validate(Config.Args.MaxLogprobs, ModelConfig.VocabSize);
        if (ids.Count == 0) throw new ArgumentException("the prompt is empty", "prompt");
        if (ids.Count >= Config.MaxModelLen)
            throw new ArgumentException($"The prompt (length {ids.Count}) is longer than the maximum model length of {Config.MaxModelLen}.", "prompt");
        foreach (int id in ids)
            if (id < 0 || id >= ModelConfig.VocabSize) throw new ArgumentException($"token id {id} is outside the vocabulary [0, {ModelConfig.VocabSize})", "promptTokenIds");
        if (loraRequest != null) LoadAdapter(loraRequest); // throws at once; outside the step lock

        lock (_lock)
        {
            if (_requests.ContainsKey(requestId)) throw new ArgumentException($"request id '{requestId}' is already running", nameof(requestId));
            var request = new Request(requestId, prompt, ids, samplingParams, loraRequest, _arrivals++);
            long seed = samplingParams.Seed ?? Config.Args.Seed + request.Arrival;
            for (int i = 0; i < samplingParams.N; i++)
            {
                var seq = new Sequence(request, i, new Random(HashCode.Combine(seed, i)), Tokenizer.CreateStreamingDecoder(samplingParams.SkipSpecialTokens));
                request.Sequences.Add(seq);
                _scheduler.Add(seq);
            }
            _requests[requestId] = request;
        }
    }

    /// <summary>Checks and loads an adapter into the CPU cache (no device memory is touched).</summary>
    void LoadAdapter(LoraRequest lora)
    {
        if (LoraManager is null) throw new ArgumentException($"LoRA adapter '{lora.LoraName}' requested but LoRA is not enabled (set EnableLora)", "loraRequest");
        lora.Validate();
        var sw = Stopwatch.StartNew();
        bool cached = LoraManager.IsLoaded(lora.LoraIntId);
        LoraManager.Load(lora.LoraName, lora.LoraIntId, lora.LoraPath);
        if (!cached) _logger.LogInformation("Loaded LoRA adapter '{Name}' (id {Id}) from {Path} in {Ms:F0} ms", lora.LoraName, lora.LoraIntId, lora.LoraPath, sw.Elapsed.TotalMilliseconds);
    }

    /// <summary>Runs one step: schedule, execute, update. Returns the outputs of requests that advanced.</summary>
    public IReadOnlyList<RequestOutput> Step()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        lock (_lock)
        {
            var started = Stopwatch.GetTimestamp();
            var scheduled = _scheduler.Schedule();
            foreach (var seq in scheduled.Preempted) ReleasePin(seq);
            _preemptions += scheduled.Preempted.Count;
            if (scheduled.Scheduled.Count == 0) return [];

            var results = _executor.Execute(scheduled.Scheduled.Select(ToExecutionItem).ToArray());
            var update = _outputs.Update(scheduled.Scheduled, results, _scheduler, Config.Args);
            foreach (var seq in update.Finished) ReleasePin(seq);
            foreach (var request in update.FinishedRequests) _requests.Remove(request.RequestId);
            Record(scheduled, update, Stopwatch.GetElapsedTime(started));
            return update.Outputs;
        }
    }

    ExecutionItem ToExecutionItem(ScheduledSequence s)
    {
        var seq = s.Sequence;
        var request = seq.Request;
        int slot = -1;
        if (request.LoraRequest is { } lora && LoraManager != null)
        {
            if (!seq.HoldsLoraPin)
            {
                // Evicted from the CPU cache while waiting (MaxCpuLoras): read it again.
                if (!LoraManager.IsLoaded(lora.LoraIntId)) LoraManager.Load(lora.LoraName, lora.LoraIntId, lora.LoraPath);
                slot = LoraManager.ActivateAndPin(lora.LoraIntId);
                if (slot < 0) throw new InvalidOperationException($"Number of requested LoRAs is greater than the number of GPU LoRA slots ({LoraManager.MaxSlots}).");
                seq.HoldsLoraPin = true;
            }
            slot = LoraManager.SlotOf(lora.LoraIntId);
        }
        bool promptLogprobs = request.PromptLogprobs != null && seq.Index == 0 && s.Start < seq.PromptLength - 1
            && s.Start + s.Count > request.PromptLogprobsDone - 1;
        return new ExecutionItem(seq.Tokens.GetRange(s.Start, s.Count), s.Start, seq.BlockTable, slot, s.Samples, promptLogprobs,
            Sampling.Sampler.NeedsLogits(request.SamplingParams, seq.OutputLength));
    }

    void ReleasePin(Sequence seq)
    {
        if (!seq.HoldsLoraPin) return;
        LoraManager!.Unpin(seq.Request.LoraId);
        seq.HoldsLoraPin = false;
    }

    void Record(SchedulerOutput scheduled, OutputUpdate update, TimeSpan stepTime)
    {
        var stats = new SchedulerStats(_scheduler.NumRunning, _scheduler.NumWaiting, _scheduler.Blocks.Usage, _scheduler.Blocks.NumUsed,
            _scheduler.Blocks.NumBlocks, _scheduler.RunningAdapters.ToArray(),
            _scheduler.Waiting.Select(s => s.Request.LoraId).Where(id => id != 0).Distinct().ToArray(), Config.Args.MaxLoras, _preemptions);
        var iteration = new IterationStats(
            scheduled.Scheduled.Sum(s => Math.Clamp(s.Sequence.PromptLength - s.Start, 0, s.Count)),
            update.GeneratedTokens, update.FinishedRequests.Count, stepTime, update.TimesToFirstToken, update.InterTokenLatencies, update.RequestLatencies);
        foreach (var logger in _statLoggers) logger.Record(stats, iteration);
    }

    /// <summary>Aborts a request: its KV blocks and adapter pin are freed at once. Unknown ids are ignored.</summary>
    public void AbortRequest(string requestId)
    {
        lock (_lock)
        {
            if (!_requests.Remove(requestId, out var request)) return;
            foreach (var seq in request.Sequences.Where(s => !s.IsFinished))
            {
                _scheduler.Finish(seq, "abort");
                ReleasePin(seq);
            }
        }
    }

    /// <summary>Loads an adapter into the CPU cache ahead of use; throws LoraException for a bad adapter.</summary>
    public bool AddLora(LoraRequest loraRequest)
    {
        ArgumentNullException.ThrowIfNull(loraRequest);
        LoadAdapter(loraRequest);
        return true;
    }

    /// <summary>Removes an adapter from the CPU cache and frees its slot unless a running request uses it.</summary>
    public bool RemoveLora(int loraIntId) => LoraManager?.Remove(loraIntId) ?? false;

    /// <summary>Ids of the adapters loaded in the CPU cache.</summary>
    public IReadOnlyCollection<int> ListLoras() => LoraManager?.Loaded ?? [];

    public void Dispose()
    {
        lock (_lock)
        {
            if (_disposed) return;
            _disposed = true;
            Metrics.Dispose();
            _executor.Dispose();
            _loraLayers?.Dispose();
            _model.Dispose();
            _device.Dispose();
        }
    }
}
