using LoraEngine.Core;
using LoraEngine.Execution;
using LoraEngine.Lora;
using LoraEngine.Metrics;
using LoraEngine.Models;
using LoraEngine.Models.Llama;
using LoraEngine.Models.Safetensors;
using LoraEngine.Models.Tokenization;
using LoraEngine.Tensors;
using LoraEngine.Tensors.Distributed;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace LoraEngine;

/// <summary>
/// vLLM's LLMEngine in .NET: add requests (each with its own adapter or none), then call <see cref="Step"/> until
/// none is unfinished. Adding a request processes it on the caller's thread — parameters and limits checked, the
/// prompt tokenised, the adapter taken from the CPU cache or read from disk — and only then hands it to the engine
/// core, whose step is one sentence: schedule, execute, update (no disk reads). Thread-safe: requests may be added,
/// aborted and adapters loaded from other threads while one thread steps.
/// </summary>
public sealed class LlmEngine : IDisposable
{
    readonly IReadOnlyList<ComputeDevice> _devices; // one per tensor-parallel rank
    readonly IReadOnlyList<LlamaModel> _models;
    readonly IReadOnlyList<LoraLayers> _loraLayers;
    readonly InputProcessor _processor;
    bool _disposed;

    LlmEngine(EngineConfig config, IReadOnlyList<ComputeDevice> devices, IReadOnlyList<LlamaModel> models, IReadOnlyList<LoraLayers> loraLayers, LoraManager? loraManager,
        IModelRunner runner, MemoryPlan plan, HfTokenizer tokenizer, IReadOnlyList<IStatLogger> statLoggers, EngineMetrics metrics, ILogger logger)
    {
        Config = config;
        _devices = devices;
        _models = models;
        _loraLayers = loraLayers;
        LoraManager = loraManager;
        MemoryPlan = plan;
        Tokenizer = tokenizer;
        Metrics = metrics;
        HashSet<int> eosIds = [.. config.ModelConfig.EosTokenIds, .. tokenizer.EosTokenIds];
        _processor = new InputProcessor(config, tokenizer, loraManager, logger);
        Core = new EngineCore(config, runner, plan.KvBlocks, tokenizer, eosIds, statLoggers, logger);
    }

    /// <summary>The validated configuration, defaults resolved against the model.</summary>
    public EngineConfig Config { get; }

    /// <summary>The model's config.json.</summary>
    public LlamaConfig ModelConfig => Config.ModelConfig;

    /// <summary>The model's tokenizer (and chat template).</summary>
    public HfTokenizer Tokenizer { get; }

    /// <summary>How device memory was split between weights, LoRA slots, activations and KV blocks.</summary>
    public MemoryPlan MemoryPlan { get; }

    /// <summary>The engine's counters, gauges and latency histograms (meter "LoraEngine").</summary>
    public EngineMetrics Metrics { get; }

    /// <summary>The device the engine runs on; under tensor parallelism every rank's, in rank order.</summary>
    public string DeviceName => _devices.Count == 1 ? _devices[0].ToString() : $"{_devices.Count} ranks: {string.Join("; ", _devices)}";

    internal LoraManager? LoraManager { get; }

    internal EngineCore Core { get; }

    /// <summary>
    /// Builds an engine in vLLM's seven stages: config, executor (device), model (with LoRA-wrapped linears when
    /// EnableLora), LoRA manager (slots + CPU cache), worker (KV cache and step buffers), input/output processors
    /// (tokenizer), stats logging.
    /// </summary>
    /// <param name="engineArgs">The model folder, device and limits; validated by <see cref="EngineArgs.CreateEngineConfig"/>.</param>
    /// <param name="usageContext">Who builds the engine: changes defaults only where vLLM's does (the step token budget).</param>
    /// <param name="statLoggers">Extra stat loggers, each created once for this engine, beside <see cref="Metrics"/> (always) and the log line (unless DisableLogStats).</param>
    /// <param name="enableMultiprocessing">
    /// Accepted for vLLM compatibility. The engine core always runs in-process; <see cref="AsyncLlmEngine"/> runs it off
    /// the caller's thread behind a queue, which is what multiprocessing buys in vLLM.
    /// </param>
    /// <exception cref="ArgumentException">An argument out of range or a model folder that does not exist; ParamName names the field.</exception>
    /// <exception cref="InvalidOperationException">The model, the LoRA slots and one max-length sequence's KV cache do not fit in the device memory allowed.</exception>
    public static LlmEngine FromEngineArgs(EngineArgs engineArgs, UsageContext usageContext = UsageContext.EngineContext,
        IReadOnlyList<IStatLoggerFactory>? statLoggers = null, bool enableMultiprocessing = false)
    {
        ArgumentNullException.ThrowIfNull(engineArgs);
        // 1. Config creation and validation.
        var config = engineArgs.CreateEngineConfig(usageContext);
        var loggerFactory = engineArgs.LoggerFactory ?? NullLoggerFactory.Instance;
        var logger = loggerFactory.CreateLogger<LlmEngine>();

        // 2. Executor selection by hardware: one device per tensor-parallel rank, rank r on device r of the kind.
        int ranks = engineArgs.TensorParallelSize;
        if (ranks > 1) engineArgs.ValidateTensorParallel(ComputeDevice.Count(config.Device));
        var owned = new List<IDisposable>();
        try
        {
            var devices = new List<ComputeDevice>();
            for (int r = 0; r < ranks; r++)
            {
                devices.Add(ComputeDevice.Create(config.Device, r));
                owned.Add(devices[r]);
            }
            var device = devices[0];
            // The ranks' group: no communication at all on one device; through the host between devices of this process.
            var communicators = ranks == 1 ? [SingleRankCommunicator.Instance] : HostStagedCommunicator.CreateGroup(ranks).ToArray<ICommunicator>();

            // 3. Model load (memory planned first so a model that cannot fit fails before anything is uploaded).
            var tokenizer = HfTokenizer.Load(engineArgs.Model);
            var models = new List<LlamaModel>();
            MemoryPlan plan;
            using (var checkpoint = SafetensorsCheckpoint.Open(engineArgs.Model))
            {
                var weightDType = config.Dtype ?? StoredDType(checkpoint);
                var loraDType = config.LoraDtype ?? weightDType;
                plan = MemoryPlan.Create(config, device, checkpoint, weightDType, loraDType);
                for (int r = 0; r < ranks; r++)
                {
                    models.Add(LlamaModel.Load(devices[r], config.ModelConfig, checkpoint, config.Dtype, communicators[r]));
                    owned.Add(models[r]);
                }
            }
            logger.LogInformation("Loaded {Model} on {Device}: {Plan}", engineArgs.Model, ranks == 1 ? device : string.Join("; ", devices), plan);

            // 4. LoRA manager: slots reserved up front on every rank, wrapped linears, one CPU cache.
            var loraLayers = new List<LoraLayers>();
            LoraManager? loraManager = null;
            if (engineArgs.EnableLora)
            {
                var loraDType = config.LoraDtype ?? models[0].WeightDType;
                foreach (var model in models)
                {
                    loraLayers.Add(LoraLayers.Wrap(model, engineArgs.MaxLoras, engineArgs.MaxLoraRank, loraDType, config.MaxNumBatchedTokens, engineArgs.FullyShardedLoras));
                    owned.Add(loraLayers[^1]);
                }
                loraManager = new LoraManager(loraLayers, config.ModelConfig, config.MaxCpuLoras);
            }

            // 5. Worker: KV cache and step buffers (per rank).
            var executor = new ModelExecutor(models, loraManager, config.MaxNumBatchedTokens, engineArgs.MaxNumSeqs, config.MaxModelLen,
                engineArgs.BlockSize, plan.KvBlocks, engineArgs.EnforceEager, loggerFactory.CreateLogger<ModelExecutor>(),
                abortRanks: () => { foreach (var c in communicators.OfType<HostStagedCommunicator>()) c.Abort(); });
            owned.Add(executor);

            // 6. Input/output processors live in the engine (tokenizer above, OutputProcessor in the constructor).
            // 7. Stats logging.
            var metrics = new EngineMetrics();
            var loggers = new List<IStatLogger> { metrics };
            if (!engineArgs.DisableLogStats) loggers.Add(new LoggingStatLogger(logger));
            foreach (var factory in statLoggers ?? []) loggers.Add(factory.Create(config));
            return new LlmEngine(config, devices, models, loraLayers, loraManager, executor, plan, tokenizer, loggers, metrics, logger);
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

    /// <summary>Whether any request is waiting or running: step until this is false.</summary>
    public bool HasUnfinishedRequests => Core.HasUnfinished;

    /// <summary>KV blocks in use (0 once every request finished, failed or was aborted).</summary>
    public int NumUsedKvBlocks => Core.NumUsedKvBlocks;

    /// <summary>
    /// Adapter copies held by requests the engine still tracks (0 once every request finished, failed or was aborted).
    /// Adapters are no longer pinned to GPU slots: the runner places each step's adapters afresh, so what could leak is
    /// a request that keeps its adapter after it ended, and this counts exactly those references.
    /// </summary>
    public int NumLoraPins => Core.NumAdapterHolders;

    /// <summary>True once a step failed on the device (vLLM's errored): every request failed and no new one is accepted.</summary>
    public bool Errored => Core.Errored;

    /// <summary>Throws <see cref="EngineDeadException"/> when the engine stopped after a device failure (vLLM's check_health).</summary>
    public void CheckHealth() => Core.ThrowIfErrored();

    /// <summary>Adds a request given as text (BOS prepended as the tokenizer's post-processor would).</summary>
    public void AddRequest(string requestId, string prompt, SamplingParams samplingParams, LoraRequest? loraRequest = null) =>
        AddRequest(requestId, prompt, samplingParams, loraRequest, cacheSalt: null);

    /// <summary>Adds a request given as token ids.</summary>
    public void AddRequest(string requestId, IReadOnlyList<int> promptTokenIds, SamplingParams samplingParams, LoraRequest? loraRequest = null) =>
        AddRequest(requestId, promptTokenIds, samplingParams, loraRequest, cacheSalt: null);

    /// <summary>
    /// Adds a request given as text with vLLM's cache_salt: its K/V blocks are shared through the prefix cache only with
    /// requests of the same salt (null: with those without one), so tenants cannot learn of each other's prompts.
    /// </summary>
    public void AddRequest(string requestId, string prompt, SamplingParams samplingParams, LoraRequest? loraRequest, string? cacheSalt)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        Core.Add(Process(requestId, prompt, null, samplingParams, loraRequest, cacheSalt));
    }

    /// <summary>Adds a request given as token ids with vLLM's cache_salt (see the text overload).</summary>
    public void AddRequest(string requestId, IReadOnlyList<int> promptTokenIds, SamplingParams samplingParams, LoraRequest? loraRequest, string? cacheSalt)
    {
        ArgumentNullException.ThrowIfNull(promptTokenIds);
        Core.Add(Process(requestId, null, promptTokenIds, samplingParams, loraRequest, cacheSalt));
    }

    /// <summary>
    /// Checks, tokenises and resolves the adapter of a request on the caller's thread (disk reads happen here, never in a
    /// step); throws for anything wrong, before the request reaches the core.
    /// </summary>
    internal EngineCoreRequest Process(string requestId, string? prompt, IReadOnlyList<int>? promptTokenIds, SamplingParams samplingParams, LoraRequest? loraRequest,
        string? cacheSalt = null)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        Core.ThrowIfErrored();
        var request = _processor.Process(requestId, prompt, promptTokenIds, samplingParams, loraRequest, cacheSalt);
        if (loraRequest is { LoadInplace: true }) Core.AdapterReloaded(loraRequest.LoraIntId, request.Adapter!);
        return request;
    }

    /// <summary>
    /// Throws ArgumentException (parameter "prompt") for a prompt longer than <see cref="EngineConfig.MaxPromptChars"/>.
    /// AddRequest checks it before tokenising; a caller that tokenises a prompt itself (a chat route counting its
    /// tokens) calls this first.
    /// </summary>
    public void CheckPromptLength(string prompt)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        _processor.CheckPromptLength(prompt);
    }

    /// <summary>Runs one step: schedule, execute, update. Returns the outputs of requests that advanced (or failed).</summary>
    public IReadOnlyList<RequestOutput> Step()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return Core.Step();
    }

    /// <summary>Aborts a request: its KV blocks are freed at once. Unknown ids are ignored.</summary>
    public void AbortRequest(string requestId) => Core.Abort(requestId);

    /// <summary>
    /// Loads an adapter into the CPU cache ahead of use; throws LoraException for a bad adapter. With
    /// <see cref="LoraRequest.LoadInplace"/> it is read again and replaces the loaded copy: unfinished requests of it
    /// switch to the new weights from their next step. <see cref="LoraRequest.LoraRoot"/> confines this read and every reload.
    /// </summary>
    public bool AddLora(LoraRequest loraRequest)
    {
        ArgumentNullException.ThrowIfNull(loraRequest);
        ObjectDisposedException.ThrowIf(_disposed, this);
        var adapter = _processor.LoadAdapter(loraRequest);
        if (loraRequest.LoadInplace) Core.AdapterReloaded(loraRequest.LoraIntId, adapter);
        return true;
    }

    /// <summary>Removes an adapter from the CPU cache; requests already running with it keep their copy and finish.</summary>
    public bool RemoveLora(int loraIntId) => LoraManager?.Remove(loraIntId) ?? false;

    /// <summary>Ids of the adapters loaded in the CPU cache.</summary>
    public IReadOnlyCollection<int> ListLoras() => LoraManager?.Loaded ?? [];

    /// <summary>Frees the KV cache, the LoRA slots, the weights and the device. Idempotent; call it from no other thread while one steps.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        Metrics.Dispose();
        Core.Dispose();
        foreach (var layers in _loraLayers) layers.Dispose();
        foreach (var model in _models) model.Dispose();
        foreach (var device in _devices) device.Dispose();
    }
}
