using Microsoft.Extensions.Logging;

namespace LoraEngine.Metrics;

/// <summary>
/// vLLM's periodic log line: every <see cref="Interval"/>, average prompt and generation throughput,
/// running/waiting requests, KV cache usage, the prefix cache hit rate and the adapters in use.
/// </summary>
internal sealed class LoggingStatLogger(ILogger logger) : IStatLogger
{
    public static readonly TimeSpan Interval = TimeSpan.FromSeconds(5);

    DateTime _since = DateTime.UtcNow;
    long _promptTokens;
    long _generationTokens;
    long _prefixQueries;
    long _prefixHits;

    public void Record(SchedulerStats scheduler, IterationStats iteration)
    {
        _promptTokens += iteration.PromptTokens;
        _generationTokens += iteration.GenerationTokens;
        _prefixQueries += scheduler.PrefixCacheStats.Queries;
        _prefixHits += scheduler.PrefixCacheStats.Hits;
        var now = DateTime.UtcNow;
        double seconds = (now - _since).TotalSeconds;
        if (seconds < Interval.TotalSeconds) return;
        logger.LogInformation(
            "Avg prompt throughput: {PromptTps:F1} tokens/s, Avg generation throughput: {GenTps:F1} tokens/s, Running: {Running} reqs, Waiting: {Waiting} reqs, KV cache usage: {Kv:P1}, Prefix cache hit rate: {HitRate:P1}, LoRA adapters running: [{RunningLoras}] waiting: [{WaitingLoras}] (max {MaxLoras})",
            _promptTokens / seconds, _generationTokens / seconds, scheduler.NumRunning, scheduler.NumWaiting, scheduler.KvCacheUsage,
            _prefixQueries > 0 ? (double)_prefixHits / _prefixQueries : 0,
            string.Join(",", scheduler.RunningLoraAdapters), string.Join(",", scheduler.WaitingLoraAdapters), scheduler.MaxLoras);
        _since = now;
        _promptTokens = _generationTokens = _prefixQueries = _prefixHits = 0;
    }
}
