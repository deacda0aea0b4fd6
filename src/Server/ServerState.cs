using LoraEngine.Chat;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace LoraEngine.Server;

/// <summary>What the routes share: the engine behind its step loop, the adapters, the chat template, request counters and the drain state.</summary>
public sealed class ServerState : IDisposable
{
    /// <summary>The message of the 503 a request gets while the server drains, and of the health check then.</summary>
    public const string ShuttingDown = "The server is shutting down.";

    /// <summary>
    /// Wraps a running engine; the adapter registry starts empty (<see cref="LoraEngineServiceCollectionExtensions.AddLoraEngine(Microsoft.Extensions.DependencyInjection.IServiceCollection, ServerOptions)"/>
    /// registers <see cref="ServerOptions.LoraModules"/>). The state owns the engine: disposing it disposes the engine.
    /// A model without a chat template leaves <see cref="ChatTemplate"/> null.
    /// </summary>
    /// <param name="options">The options served; <see cref="ServerOptions.LoraRoot"/> confines runtime loads.</param>
    /// <param name="engine">The engine, already built from <see cref="ServerOptions.Engine"/>.</param>
    /// <param name="logger">Where drain messages go; null: nowhere.</param>
    /// <exception cref="ChatTemplateException">The model's chat template uses syntax outside the supported subset.</exception>
    public ServerState(ServerOptions options, AsyncLlmEngine engine, ILogger? logger = null)
    {
        Options = options;
        Engine = engine;
        Logger = logger ?? NullLogger.Instance;
        Adapters = new AdapterRegistry(options.LoraRoot);
        var template = engine.Engine.Tokenizer.ChatTemplate;
        ChatTemplate = template is null ? null : ChatTemplate.Parse(template);
    }

    /// <summary>The options the server was started with.</summary>
    public ServerOptions Options { get; }

    /// <summary>The engine behind its step loop; <see cref="AsyncLlmEngine.Engine"/> is the engine itself (tokenizer, adapters, metrics).</summary>
    public AsyncLlmEngine Engine { get; }

    /// <summary>The adapters served as models, by name.</summary>
    public AdapterRegistry Adapters { get; }

    /// <summary>The model's chat template, parsed once; null when the model has none (chat routes then answer 400).</summary>
    public ChatTemplate? ChatTemplate { get; }

    /// <summary>The logger given to the constructor (from AddLoraEngine: category LoraEngine.Server), else a null logger.</summary>
    public ILogger Logger { get; }

    /// <summary>The base model's id in the API (<see cref="ServerOptions.ModelId"/>).</summary>
    public string ModelId => Options.ModelId;

    // Request counters behind /metrics: fields, so the routes can Interlocked.Increment them.
    /// <summary>Generation requests (completions and chat) that passed their checks and started.</summary>
    public long RequestsStarted;
    /// <summary>Generation requests answered in full.</summary>
    public long RequestsSucceeded;
    /// <summary>Requests that ended in a server error: a 5xx, or an error event ending a stream.</summary>
    public long RequestsFailed;
    /// <summary>Requests whose client went away before the answer was complete.</summary>
    public long RequestsAborted;

    /// <summary>Set once shutdown began: new requests get 503 and /health turns 503.</summary>
    public bool Draining { get; private set; }

    /// <summary>Completes when the drain is over: every request finished, or the rest was aborted at the timeout.</summary>
    public Task Drained { get; private set; } = Task.CompletedTask;

    /// <summary>The adapter for a request's model field: null for the base model; false when the name is unknown.</summary>
    public bool TryResolve(string? model, out LoraRequest? lora)
    {
        lora = null;
        if (model is null || model == ModelId) return true;
        lora = Adapters.Find(model);
        return lora != null;
    }

    /// <summary>
    /// Starts the graceful shutdown: no new request is accepted; requests in flight may finish within
    /// <see cref="ServerOptions.DrainTimeout"/>, then the rest are aborted and their clients get an error event.
    /// </summary>
    public Task BeginDrain()
    {
        if (Draining) return Drained;
        Draining = true;
        Logger.LogInformation("Shutting down: {Count} requests in flight get up to {Seconds} s to finish", Engine.NumOpenStreams, Options.DrainTimeout.TotalSeconds);
        return Drained = Task.Run(async () =>
        {
            var deadline = DateTime.UtcNow + Options.DrainTimeout;
            while (Engine.NumOpenStreams > 0 && DateTime.UtcNow < deadline) await Task.Delay(20);
            if (Engine.NumOpenStreams == 0) return;
            Logger.LogWarning("Drain timeout: aborting {Count} requests still in flight", Engine.NumOpenStreams);
            Engine.AbortAll($"{ShuttingDown} The request did not finish within the drain timeout.");
        });
    }

    /// <summary>Stops the step loop and frees the engine's device memory.</summary>
    public void Dispose() => Engine.Dispose();
}
