using LoraEngine.Chat;

namespace LoraEngine.Server;

/// <summary>What the routes share: the engine behind its step loop, the adapters, the chat template and request counters.</summary>
public sealed class ServerState : IDisposable
{
    public ServerState(ServerOptions options, AsyncLlmEngine engine)
    {
        Options = options;
        Engine = engine;
        Adapters = new AdapterRegistry(options.LoraRoot);
        var template = engine.Engine.Tokenizer.ChatTemplate;
        ChatTemplate = template is null ? null : ChatTemplate.Parse(template);
    }

    public ServerOptions Options { get; }

    public AsyncLlmEngine Engine { get; }

    public AdapterRegistry Adapters { get; }

    public ChatTemplate? ChatTemplate { get; }

    public string ModelId => Options.ModelId;

    public long RequestsStarted;
    public long RequestsSucceeded;
    public long RequestsFailed;
    public long RequestsAborted;

    /// <summary>The adapter for a request's model field: null for the base model; false when the name is unknown.</summary>
    public bool TryResolve(string? model, out LoraRequest? lora)
    {
        lora = null;
        if (model is null || model == ModelId) return true;
        lora = Adapters.Find(model);
        return lora != null;
    }

    public void Dispose() => Engine.Dispose();
}
