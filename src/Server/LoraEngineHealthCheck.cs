using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace LoraEngine.Server;

/// <summary>
/// Healthy while the engine's step loop runs; unhealthy once it has stopped. The data carries what an operator
/// looks at first: requests running and waiting, and the fraction of KV blocks in use.
/// </summary>
public sealed class LoraEngineHealthCheck(ServerState state) : IHealthCheck
{
    /// <summary>The name it is registered under by <see cref="LoraEngineServiceCollectionExtensions.AddLoraEngine(Microsoft.Extensions.DependencyInjection.IServiceCollection, ServerOptions)"/>.</summary>
    public const string Name = "loraengine";

    /// <inheritdoc/>
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        var last = state.Engine.Engine.Metrics.Last;
        var data = new Dictionary<string, object>
        {
            ["model"] = state.ModelId,
            ["num_requests_running"] = last?.NumRunning ?? 0,
            ["num_requests_waiting"] = last?.NumWaiting ?? 0,
            ["kv_cache_usage_perc"] = last?.KvCacheUsage ?? 0,
        };
        return Task.FromResult(state.Engine.IsRunning && !state.Engine.Errored
            ? HealthCheckResult.Healthy("engine step loop running", data)
            : HealthCheckResult.Unhealthy("engine step loop stopped", data: data));
    }
}
