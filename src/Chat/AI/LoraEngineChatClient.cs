using System.Runtime.CompilerServices;
using LoraEngine.Chat;
using Microsoft.Extensions.AI;

namespace LoraEngine.AI;

/// <summary>
/// Microsoft.Extensions.AI's IChatClient over an engine, in process. <see cref="ChatOptions.ModelId"/> picks the
/// adapter by name (the base model's id, or none, for no adapter); messages go through the model's chat template.
/// Sampling options and Instructions are honoured; options it cannot honour (tools, JSON formats, images) throw.
/// </summary>
public sealed class LoraEngineChatClient : IChatClient
{
    readonly AsyncLlmEngine _engine;
    readonly ChatTemplate _template;
    readonly Func<string, LoraRequest?> _adapters;
    readonly ChatClientMetadata _metadata;

    /// <param name="engine">the engine that generates; the client does not own it (disposing the client leaves it running)</param>
    /// <param name="baseModelId">the base model's id: a <see cref="ChatOptions.ModelId"/> equal to it, or none, uses no adapter</param>
    /// <param name="adapters">adapter name → its LoraRequest, or null when the name is unknown</param>
    public LoraEngineChatClient(AsyncLlmEngine engine, string baseModelId, Func<string, LoraRequest?> adapters)
    {
        _engine = engine ?? throw new ArgumentNullException(nameof(engine));
        _template = ChatTemplate.Parse(engine.Engine.Tokenizer.ChatTemplate
            ?? throw new InvalidOperationException("the model has no chat template (chat_template.jinja or tokenizer_config.json)"));
        _adapters = adapters;
        _metadata = new ChatClientMetadata("loraengine", null, baseModelId);
    }

    /// <inheritdoc/>
    public async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default) =>
        await GetStreamingResponseAsync(messages, options, cancellationToken).ToChatResponseAsync(cancellationToken).ConfigureAwait(false);

    /// <inheritdoc/>
    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        string modelId = options?.ModelId ?? _metadata.DefaultModelId!;
        LoraRequest? lora = modelId == _metadata.DefaultModelId ? null
            : _adapters(modelId) ?? throw new ArgumentException($"The model `{modelId}` does not exist.", nameof(options));
        CheckSupported(options);
        var tokenizer = _engine.Engine.Tokenizer;
        string prompt = _template.Render(Turns(messages, options?.Instructions), true, tokenizer.BosToken, tokenizer.EosToken);
        var sampling = new SamplingParams
        {
            Temperature = options?.Temperature ?? 1.0,
            TopP = options?.TopP ?? 1.0,
            TopK = options?.TopK ?? 0,
            MaxTokens = options?.MaxOutputTokens ?? 256,
            Seed = options?.Seed,
            PresencePenalty = options?.PresencePenalty ?? 0,
            FrequencyPenalty = options?.FrequencyPenalty ?? 0,
            Stop = options?.StopSequences?.ToArray(),
        };
        string id = "chatcmpl-" + Guid.NewGuid().ToString("N");
        int sent = 0;
        RequestOutput? last = null;
        await foreach (var output in _engine.GenerateAsync(prompt, sampling, lora, id, cancellationToken).ConfigureAwait(false))
        {
            last = output;
            string text = output.Outputs[0].Text;
            if (text.Length > sent)
            {
                yield return new ChatResponseUpdate(ChatRole.Assistant, text[sent..]) { ResponseId = id, ModelId = modelId };
                sent = text.Length;
            }
        }
        if (last is null) yield break;
        var completion = last.Outputs[0];
        yield return new ChatResponseUpdate
        {
            ResponseId = id, ModelId = modelId, Role = ChatRole.Assistant,
            FinishReason = completion.FinishReason == "length" ? ChatFinishReason.Length : ChatFinishReason.Stop,
            Contents = [new UsageContent(new UsageDetails
            {
                InputTokenCount = last.PromptTokenIds.Count, OutputTokenCount = completion.TokenIds.Count,
                TotalTokenCount = last.PromptTokenIds.Count + completion.TokenIds.Count,
            })],
        };
    }

    /// <summary>Options this client cannot honour are refused, never ignored: tools, non-text formats, server-side state.</summary>
    static void CheckSupported(ChatOptions? options)
    {
        if (options is null) return;
        string? refused =
            options.Tools is { Count: > 0 } ? "Tools (tool calling is not built)"
            : options.ToolMode is not (null or NoneChatToolMode) ? "ToolMode (tool calling is not built)"
            : options.ResponseFormat is not (null or ChatResponseFormatText) ? "ResponseFormat other than text (structured outputs are not built)"
            : options.ConversationId != null ? "ConversationId (the client keeps no conversations)"
            : options.ContinuationToken != null || options.AllowBackgroundResponses == true ? "background responses"
            : options.Reasoning != null ? "Reasoning (the model does not reason separately)"
            : options.RawRepresentationFactory != null ? "RawRepresentationFactory (there is no underlying client)"
            : options.AdditionalProperties is { Count: > 0 } extra ? $"AdditionalProperties ({string.Join(", ", extra.Keys)})"
            : null;
        if (refused != null) throw new ArgumentException($"ChatOptions.{refused} is not supported.", nameof(options));
    }

    /// <summary>Instructions first, as a system message; each message's text, with its author as the template's name.</summary>
    static List<ChatTurn> Turns(IEnumerable<ChatMessage> messages, string? instructions)
    {
        var turns = new List<ChatTurn>();
        if (!string.IsNullOrEmpty(instructions)) turns.Add(new ChatTurn("system", instructions));
        foreach (var m in messages)
        {
            if (m.Contents.FirstOrDefault(c => c is not TextContent) is { } other)
                throw new ArgumentException($"{other.GetType().Name} in a {m.Role} message is not supported: the model reads text only.", nameof(messages));
            turns.Add(new ChatTurn(m.Role.Value, m.Text) { Extra = m.AuthorName is { } name ? new Dictionary<string, object?> { ["name"] = name } : null });
        }
        return turns;
    }

    /// <inheritdoc/>
    public object? GetService(Type serviceType, object? serviceKey = null) =>
        serviceKey is not null ? null
        : serviceType == typeof(ChatClientMetadata) ? _metadata
        : serviceType.IsInstanceOfType(this) ? this
        : serviceType.IsInstanceOfType(_engine) ? _engine
        : null;

    /// <summary>The engine is owned by whoever created it.</summary>
    public void Dispose() { }
}
