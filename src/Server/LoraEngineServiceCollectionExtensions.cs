using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace LoraEngine.Server;

/// <summary>
/// Registers the engine in an ASP.NET Core application:
/// <code>
/// builder.Services.AddLoraEngine(builder.Configuration.GetSection("LoraEngine"));
/// app.MapOpenAiEndpoints();
/// app.MapLoraAdmin();
/// </code>
/// One <see cref="ServerState"/> (the <see cref="AsyncLlmEngine"/>, the adapters, the chat template) is a singleton built
/// when the host starts, so a missing model or a bad static adapter stops the start with the loader's message; the
/// container disposes it (and the device memory behind it) when the host stops.
/// </summary>
public static class LoraEngineServiceCollectionExtensions
{
    /// <summary>The configuration section <see cref="AddLoraEngine(IServiceCollection, IConfiguration)"/> is usually given.</summary>
    public const string ConfigurationSection = "LoraEngine";

    /// <summary>
    /// Binds <see cref="ServerOptions"/> from configuration: <c>Engine</c> holds <see cref="EngineArgs"/>
    /// (<c>LoraEngine:Engine:Model</c>, <c>LoraEngine:Engine:EnableLora</c>, ...), beside <c>ServedModelName</c>,
    /// <c>LoraModules</c> (a list of <c>Name</c>, <c>Path</c>, <c>BaseModelName</c>), <c>ApiKey</c>,
    /// <c>AllowRuntimeLoraUpdating</c> and <c>LoraRoot</c>. <c>Host</c> and <c>Port</c> are the application's own
    /// (Kestrel's configuration) and are not read here.
    /// </summary>
    public static IServiceCollection AddLoraEngine(this IServiceCollection services, IConfiguration configuration)
    {
        ArgumentNullException.ThrowIfNull(configuration);
        var options = configuration.Get<ServerOptions>(o => o.ErrorOnUnknownConfiguration = true);
        if (options?.Engine is null || string.IsNullOrWhiteSpace(options.Engine.Model))
            throw new ArgumentException($"configuration '{(configuration as IConfigurationSection)?.Path ?? "(root)"}' names no Engine:Model (the model folder)", nameof(configuration));
        return services.AddLoraEngine(options);
    }

    /// <summary>Registers the engine built from <paramref name="options"/> (its <see cref="EngineArgs"/> underneath).</summary>
    /// <exception cref="ArgumentException">an option cannot work (<see cref="ServerOptions.Validate"/>); the message names it.</exception>
    public static IServiceCollection AddLoraEngine(this IServiceCollection services, ServerOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate(); // an application embedding the engine gets the checks `serve` makes
        services.AddSingleton(options);
        services.AddSingleton(provider => CreateState(options, provider.GetService<ILoggerFactory>()));
        services.AddHostedService<EngineStartup>();
        services.AddHealthChecks().AddCheck<LoraEngineHealthCheck>(LoraEngineHealthCheck.Name, tags: ["loraengine"]);
        return services;
    }

    static ServerState CreateState(ServerOptions options, ILoggerFactory? loggerFactory)
    {
        var engine = AsyncLlmEngine.FromEngineArgs(options.Engine with { LoggerFactory = options.Engine.LoggerFactory ?? loggerFactory });
        var state = new ServerState(options, engine, (options.Engine.LoggerFactory ?? loggerFactory)?.CreateLogger("LoraEngine.Server"));
        try
        {
            foreach (var module in options.LoraModules)
            {
                var lora = state.Adapters.Create(module.Name, module.Path);
                engine.Engine.AddLora(lora);
                state.Adapters.Add(lora, module.BaseModelName);
            }
            return state;
        }
        catch
        {
            state.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Builds the engine while the host starts instead of on the first request, and drains it when the host stops
    /// (SIGTERM: the stopping event starts <see cref="ServerState.BeginDrain"/>; the host's ShutdownTimeout should
    /// exceed <see cref="ServerOptions.DrainTimeout"/> so the aborted requests can still be told).
    /// </summary>
    sealed class EngineStartup(IServiceProvider services, IHostApplicationLifetime lifetime) : IHostedService
    {
        public Task StartAsync(CancellationToken cancellationToken)
        {
            var state = services.GetRequiredService<ServerState>();
            lifetime.ApplicationStopping.Register(() => state.BeginDrain());
            return Task.CompletedTask;
        }

        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }
}
