using System.Diagnostics;
using LoraEngine.Execution;
using LoraEngine.Lora;
using LoraEngine.Models.Tokenization;
using LoraEngine.Sampling;
using LoraEngine.Tensors.Kernels;
using Microsoft.Extensions.Logging;

namespace LoraEngine.Core;

/// <summary>
/// The inner loop of the engine (vLLM v1's EngineCore): the requests, the scheduler, the model runner and the output
/// processor. <see cref="Step"/> is schedule (pure CPU) → runner.Execute (the device) → update (tokens, stops,
/// outputs); nothing in a step reads a file. Requests arrive already processed (<see cref="EngineCoreRequest"/>).
/// A problem with one request fails that request; an exception from the runner (or anything else that escapes a step)
/// is a device-level failure: every unfinished request fails, the failure is logged and the core accepts no more
/// requests (<see cref="Errored"/>).
/// Thread-safe: one lock, held for a step and briefly by Add and Abort.
/// </summary>
internal sealed class EngineCore : IDisposable
{
    public const string DeadError = "The engine failed while running a step and stopped; it must be restarted.";

    readonly object _lock = new();
    readonly EngineConfig _config;
    readonly Scheduler _scheduler;
    readonly OutputProcessor _outputs;
    readonly HfTokenizer _tokenizer;
    readonly IReadOnlySet<int> _eosIds;
    readonly Dictionary<string, Request> _requests = new();
    readonly IReadOnlyList<IStatLogger> _statLoggers;
    readonly ILogger _logger;
    long _arrivals;
    long _preemptions;

    public EngineCore(EngineConfig config, IModelRunner runner, int kvBlocks, HfTokenizer tokenizer, IReadOnlySet<int> eosIds,
        IReadOnlyList<IStatLogger> statLoggers, ILogger logger)
    {
        _config = config;
        Runner = runner;
        _tokenizer = tokenizer;
        _eosIds = eosIds;
        _statLoggers = statLoggers;
        _logger = logger;
        bool caching = config.Args.EnablePrefixCaching;
        var kv = new KvCacheManager(new BlockPool(kvBlocks, retainFreedBlocks: caching), config.Args.BlockSize, caching);
        _scheduler = new Scheduler(kv, config.Args.MaxNumSeqs, config.MaxNumBatchedTokens, config.Args.MaxLoras);
        _outputs = new OutputProcessor(tokenizer, eosIds, config.MaxModelLen, logger);
    }

    /// <summary>The model runner (tests wrap it to inject device failures).</summary>
    internal IModelRunner Runner { get; set; }

    volatile Exception? _deadCause;

    /// <summary>Set once a step failed on the device: every request failed, none is accepted any more.</summary>
    public Exception? DeadCause => _deadCause;

    public bool Errored => DeadCause != null;

    public bool HasUnfinished
    {
        get { lock (_lock) return _scheduler.HasUnfinished; }
    }

    public int NumUsedKvBlocks
    {
        get { lock (_lock) return _scheduler.Blocks.NumUsed; }
    }

    /// <summary>Requests the core still tracks that hold an adapter copy (0 once every request finished, failed or was aborted).</summary>
    public int NumAdapterHolders
    {
        get { lock (_lock) return _requests.Values.Count(r => r.Adapter != null); }
    }

    public void ThrowIfErrored()
    {
        if (DeadCause is { } cause) throw new EngineDeadException(DeadError, cause);
    }

    public void Add(EngineCoreRequest r)
    {
        lock (_lock)
        {
            ThrowIfErrored();
            if (_requests.ContainsKey(r.RequestId)) throw new ArgumentException($"request id '{r.RequestId}' is already running", "requestId");
            var request = new Request(r.RequestId, r.Prompt, r.PromptTokenIds, r.SamplingParams, r.LoraRequest, _arrivals++, r.CacheSalt);
            if (r.Adapter != null) request.Adapter = NewestCopy(r.LoraRequest!.LoraIntId, r.Adapter);
            long seed = r.SamplingParams.Seed ?? _config.Args.Seed + request.Arrival;
            for (int i = 0; i < r.SamplingParams.N; i++)
            {
                var seq = new Sequence(request, i, seed, _tokenizer.CreateStreamingDecoder(r.SamplingParams.SkipSpecialTokens));
                request.Sequences.Add(seq);
                _scheduler.Add(seq);
            }
            _requests[r.RequestId] = request;
        }
    }

    /// <summary>
    /// A newer copy of adapter <paramref name="id"/> was read (load_inplace): every unfinished request of it switches to
    /// that copy from its next step, so the step's GPU slot gets the new weights before any token uses them.
    /// </summary>
    public void AdapterReloaded(int id, LoraAdapter copy)
    {
        lock (_lock) NewestCopy(id, copy);
    }

    /// <summary>
    /// Keeps one copy per adapter id among unfinished requests, the most recently read (highest serial): a newer copy
    /// replaces the one they hold; an older one (read before a reload finished) gives way to theirs.
    /// </summary>
    LoraAdapter NewestCopy(int id, LoraAdapter copy)
    {
        var held = _requests.Values.FirstOrDefault(q => q.LoraId == id && !q.IsFinished)?.Adapter;
        if (held is null || held == copy) return copy;
        if (held.Serial > copy.Serial) return held;
        foreach (var q in _requests.Values)
            if (q.LoraId == id) q.Adapter = copy;
        return copy;
    }

    /// <summary>One step: schedule (pure CPU) → execute (the runner, on the device) → update. Returns the outputs of requests that advanced.</summary>
    public IReadOnlyList<RequestOutput> Step()
    {
        lock (_lock)
        {
            if (Errored) return [];
            try
            {
                return StepLocked();
            }
            catch (Exception e)
            {
                // Per-request problems never get here (the output processor fails just that request): this is the
                // device, or a fault that leaves the engine's state unknown.
                return Die(e);
            }
        }
    }

    IReadOnlyList<RequestOutput> StepLocked()
    {
        var started = Stopwatch.GetTimestamp();
        var waited = Runner.DeviceWait;
        var plan = _scheduler.Schedule();
        _preemptions += plan.Preempted.Count;
        if (plan.Scheduled.Count == 0) return [];
        var results = Runner.Execute(plan.Scheduled.Select(ToExecutionItem).ToArray());
        var update = _outputs.Update(plan.Scheduled, results, _scheduler);
        foreach (var request in update.FinishedRequests) _requests.Remove(request.RequestId);
        Record(new IterationStats(
            plan.Scheduled.Sum(s => Math.Clamp(s.Sequence.PromptLength - s.Start, 0, s.Count)),
            update.GeneratedTokens, update.FinishedRequests.Count, Stopwatch.GetElapsedTime(started),
            update.TimesToFirstToken, update.InterTokenLatencies, update.RequestLatencies)
            { FailedRequests = update.FailedRequests, DeviceWait = Runner.DeviceWait - waited });
        return update.Outputs;
    }

    ExecutionItem ToExecutionItem(ScheduledSequence s)
    {
        var seq = s.Sequence;
        var request = seq.Request;
        return new ExecutionItem(seq.Tokens.GetRange(s.Start, s.Count), s.Start, seq.BlockTable, request.Adapter,
            s.Samples ? Sampler.For(seq, _eosIds) : null, ScoringOf(s));
    }

    /// <summary>
    /// The prompt rows of a chunk whose logprobs are still wanted (the first sequence of a request that asked for them):
    /// row i predicts the token at Start + i + 1. Null when the chunk has none.
    /// </summary>
    static PromptScoring? ScoringOf(ScheduledSequence s)
    {
        var seq = s.Sequence;
        var request = seq.Request;
        if (request.SamplingParams.PromptLogprobs is not int k || seq.Index != 0) return null;
        var targets = new int[s.Count];
        bool any = false;
        for (int i = 0; i < s.Count; i++)
        {
            int target = s.Start + i + 1;
            bool wanted = target < seq.PromptLength && target >= request.PromptLogprobsDone;
            targets[i] = wanted ? seq.Tokens[target] : -1;
            any |= wanted;
        }
        if (!any) return null;
        bool rawLogits = k < 0 || k > SampleBatch.MaxLogprobs;
        return new PromptScoring(targets, rawLogits ? 0 : k, rawLogits);
    }

    /// <summary>A device-level failure: every unfinished request fails with an error, and the core stops.</summary>
    IReadOnlyList<RequestOutput> Die(Exception cause)
    {
        _deadCause = cause;
        var failed = _requests.Values.ToArray();
        _logger.LogCritical(cause, "A step failed: {Count} unfinished requests fail and the engine accepts no more", failed.Length);
        foreach (var request in failed) OutputProcessor.Fail(request, DeadError, _scheduler);
        _requests.Clear();
        Record(IterationStats.None with { FinishedRequests = failed.Length, FailedRequests = failed.Length });
        return failed.Select(OutputProcessor.Output).OfType<RequestOutput>().ToArray();
    }

    /// <summary>Aborts a request: its KV blocks are freed at once and the gauges updated. Unknown ids are ignored.</summary>
    public void Abort(string requestId)
    {
        lock (_lock)
        {
            if (!_requests.Remove(requestId, out var request)) return;
            foreach (var seq in request.Sequences.Where(s => !s.IsFinished)) _scheduler.Finish(seq, "abort");
            Record(IterationStats.None);
        }
    }

    /// <summary>Reports the state after a step (or an abort, so gauges never go stale) to every stat logger.</summary>
    void Record(IterationStats iteration)
    {
        var stats = new SchedulerStats(_scheduler.NumRunning, _scheduler.NumWaiting, _scheduler.Blocks.Usage, _scheduler.Blocks.NumUsed,
            _scheduler.Blocks.NumBlocks, _scheduler.RunningAdapters.ToArray(),
            _scheduler.Waiting.Select(s => s.Request.LoraId).Where(id => id != 0).Distinct().ToArray(), _config.Args.MaxLoras, _preemptions)
        {
            PrefixCacheStats = _scheduler.Kv.TakeStats(),
        };
        foreach (var logger in _statLoggers)
        {
            try
            {
                logger.Record(stats, iteration);
            }
            catch (Exception e)
            {
                _logger.LogWarning(e, "Stat logger {Logger} failed", logger.GetType().Name); // a logger's fault is not the engine's
            }
        }
    }

    public void Dispose()
    {
        lock (_lock) Runner.Dispose();
    }
}
