using System.Text.Json;
using System.Text.Json.Serialization;

namespace LoraEngine.Server;

/// <summary>POST /tokenize: a prompt, or chat messages rendered by the chat template (vLLM's two request shapes in one).</summary>
/// <param name="Model">The served model name or an adapter's name (adapters share the base tokenizer); null: the base model. An unknown name is a 404.</param>
/// <param name="Prompt">The text to tokenize; give it or <paramref name="Messages"/>, not both.</param>
/// <param name="Messages">Chat messages, rendered by the model's chat template and then tokenized, as /v1/chat/completions would.</param>
public sealed record TokenizeRequest(string? Model, string? Prompt, List<ChatMessageDto>? Messages) : IChatInput, IHasUnrecognizedFields
{
    /// <summary>Default: true for a prompt, false for messages (the template adds BOS), as vLLM.</summary>
    public bool? AddSpecialTokens { get; init; }
    /// <summary>add_generation_prompt (messages only): end the prompt with the template's opening of an assistant turn. Default true.</summary>
    public bool? AddGenerationPrompt { get; init; }
    /// <summary>continue_final_message (messages only): leave the last message open; true together with add_generation_prompt is a 400.</summary>
    public bool? ContinueFinalMessage { get; init; }
    /// <summary>chat_template_kwargs (messages only): extra variables for the chat template.</summary>
    public Dictionary<string, JsonElement>? ChatTemplateKwargs { get; init; }
    /// <summary>documents (messages only): a list of documents given to the chat template.</summary>
    public JsonElement Documents { get; init; }
    /// <summary>reasoning_effort (messages only): given to the chat template as it is.</summary>
    public string? ReasoningEffort { get; init; }
    /// <summary>return_token_strs: the response also lists each token as the vocabulary spells it.</summary>
    public bool? ReturnTokenStrs { get; init; }

    /// <summary>Fields no member takes: harmless ones are accepted, those of a feature not built only at their "off" value, any other is a 400 naming it.</summary>
    [JsonExtensionData]
    public Dictionary<string, JsonElement>? Unrecognized { get; init; }
}

/// <summary>The body of POST /tokenize.</summary>
/// <param name="Count">How many tokens.</param>
/// <param name="MaxModelLen">max_model_len: the model's context length in tokens (prompt plus output).</param>
/// <param name="Tokens">The token ids, as the engine would be given them.</param>
public sealed record TokenizeResponse(int Count, int MaxModelLen, IReadOnlyList<int> Tokens)
{
    /// <summary>token_strs (with return_token_strs): each token as the vocabulary spells it (byte-level, e.g. "ĠHello"), null for an id the vocabulary lacks.</summary>
    public List<string?>? TokenStrs { get; init; }
}

/// <summary>POST /detokenize.</summary>
/// <param name="Model">The served model name or an adapter's name; null: the base model. An unknown name is a 404.</param>
/// <param name="Tokens">The token ids to turn into text; required, each in [0, vocabulary size).</param>
public sealed record DetokenizeRequest(string? Model, List<int>? Tokens) : IHasUnrecognizedFields
{
    /// <summary>Fields no member takes: harmless ones are accepted, those of a feature not built only at their "off" value, any other is a 400 naming it.</summary>
    [JsonExtensionData]
    public Dictionary<string, JsonElement>? Unrecognized { get; init; }
}

/// <summary>The body of POST /detokenize.</summary>
/// <param name="Prompt">The tokens' text.</param>
public sealed record DetokenizeResponse(string Prompt);
