namespace LoraEngine;

/// <summary>The engine's state after a step (vLLM's SchedulerStats).</summary>
public sealed record SchedulerStats(
    int NumRunning,
    int NumWaiting,
    double KvCacheUsage,
    int KvBlocksUsed,
    int KvBlocksTotal,
    IReadOnlyCollection<int> RunningLoraAdapters,
    IReadOnlyCollection<int> WaitingLoraAdapters,
    int MaxLoras,
    long NumPreemptions)
{
    /// <summary>Prefix-cache lookups since the previous report (vLLM's SchedulerStats.prefix_cache_stats).</summary>
    public PrefixCacheStats PrefixCacheStats { get; init; } = PrefixCacheStats.None;
}

/// <summary>
/// Prefix-cache lookups over an interval (vLLM's PrefixCacheStats): sequences that looked their tokens up when they were
/// admitted, the tokens they looked up (queries) and the tokens found cached (hits), so hits / queries is the hit rate.
/// </summary>
/// <param name="Requests">Sequences that looked their prompt up.</param>
/// <param name="Queries">Tokens looked up.</param>
/// <param name="Hits">Of those, tokens found cached.</param>
public sealed record PrefixCacheStats(int Requests, long Queries, long Hits)
{
    /// <summary>No lookups.</summary>
    public static PrefixCacheStats None { get; } = new(0, 0, 0);
}

/// <summary>What one step did (vLLM's IterationStats): tokens computed, requests finished, latencies observed.</summary>
public sealed record IterationStats(
    int PromptTokens,
    int GenerationTokens,
    int FinishedRequests,
    TimeSpan StepTime,
    IReadOnlyList<TimeSpan> TimesToFirstToken,
    IReadOnlyList<TimeSpan> InterTokenLatencies,
    IReadOnlyList<TimeSpan> RequestLatencies)
{
    /// <summary>Requests among <see cref="FinishedRequests"/> that the engine failed (finish reason "error").</summary>
    public int FailedRequests { get; init; }

    /// <summary>Of <see cref="StepTime"/>, the time the host waited for the device to finish the step's work.</summary>
    public TimeSpan DeviceWait { get; init; }

    /// <summary>Nothing computed: reported with the state after an abort, so gauges follow it at once.</summary>
    public static IterationStats None { get; } = new(0, 0, 0, TimeSpan.Zero, [], [], []);
}

/// <summary>Receives the stats of every step.</summary>
public interface IStatLogger
{
    /// <summary>
    /// Called after every step on the stepping thread, and after an abort (with <see cref="IterationStats.None"/>) on the
    /// aborting thread, under the engine's lock: keep it quick. An exception is logged and does not stop the engine.
    /// </summary>
    void Record(SchedulerStats scheduler, IterationStats iteration);
}

/// <summary>Creates a stat logger for an engine (vLLM's StatLoggerFactory).</summary>
public interface IStatLoggerFactory
{
    /// <summary>Called once while the engine is built, with its validated configuration.</summary>
    IStatLogger Create(EngineConfig config);
}
