using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace LoraEngine.Server;

/// <summary>
/// Healthy while the engine's step loop runs; unhealthy once it has stopped (a device failure ends it) or while the
/// server drains for shutdown. The data carries what an operator looks at first: requests running and waiting, and the
/// fraction of KV blocks in use.
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
        try
        {
            state.Engine.CheckHealth();
        }
        catch (EngineDeadException e)
        {
            return Task.FromResult(HealthCheckResult.Unhealthy(e.Message, e, data));
        }
        if (!state.Engine.IsRunning) return Task.FromResult(HealthCheckResult.Unhealthy("The engine's step loop stopped.", data: data));
        if (state.Draining) return Task.FromResult(HealthCheckResult.Unhealthy(ServerState.ShuttingDown, data: data));
        return Task.FromResult(HealthCheckResult.Healthy("The engine's step loop is running.", data));
    }
}
