using LoraEngine.Chat;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace LoraEngine.Server;

/// <summary>What the routes share: the engine behind its step loop, the adapters, the chat template, request counters and the drain state.</summary>
public sealed class ServerState : IDisposable
{
    public const string ShuttingDown = "The server is shutting down.";

    public ServerState(ServerOptions options, AsyncLlmEngine engine, ILogger? logger = null)
    {
        Options = options;
        Engine = engine;
        Logger = logger ?? NullLogger.Instance;
        Adapters = new AdapterRegistry(options.LoraRoot);
        var template = engine.Engine.Tokenizer.ChatTemplate;
        ChatTemplate = template is null ? null : ChatTemplate.Parse(template);
    }

    public ServerOptions Options { get; }

    public AsyncLlmEngine Engine { get; }

    public AdapterRegistry Adapters { get; }

    public ChatTemplate? ChatTemplate { get; }

    public ILogger Logger { get; }

    public string ModelId => Options.ModelId;

    public long RequestsStarted;
    public long RequestsSucceeded;
    public long RequestsFailed;
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

    public void Dispose() => Engine.Dispose();
}
