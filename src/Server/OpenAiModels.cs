using System.Text.Json;
using System.Text.Json.Serialization;

namespace LoraEngine.Server;

// Wire records of vLLM's OpenAI-compatible API shared by the routes (snake_case on the wire). The completion, chat and
// tokenizer records have files of their own.

/// <summary>Fields of a request body that no record member took: each is checked against <see cref="RequestParameters"/>.</summary>
internal interface IHasUnrecognizedFields
{
    Dictionary<string, JsonElement>? Unrecognized { get; }
}

/// <summary>A streaming request's stream_options (accepted only with stream=true).</summary>
/// <param name="IncludeUsage">include_usage: after the last choice chunk, one more chunk with no choices carries the usage of the
/// whole request; the other chunks carry a null usage.</param>
public sealed record StreamOptions(bool? IncludeUsage) : IHasUnrecognizedFields
{
    /// <summary>With include_usage: every chunk carries the usage so far.</summary>
    public bool? ContinuousUsageStats { get; init; }

    /// <summary>Fields stream_options does not declare: any one is refused with a 400 naming it (stream_options.{name}).</summary>
    [JsonExtensionData]
    public Dictionary<string, JsonElement>? Unrecognized { get; init; }
}

/// <summary>Token counts of a response (usage): all prompts and all choices of the request together.</summary>
/// <param name="PromptTokens">prompt_tokens: tokens in the prompts, after truncation and chat templating.</param>
/// <param name="CompletionTokens">completion_tokens: tokens generated, over every choice.</param>
/// <param name="TotalTokens">total_tokens: the sum of the two.</param>
public sealed record Usage(int PromptTokens, int CompletionTokens, int TotalTokens);

/// <summary>One entry of GET /v1/models (and the body of GET /v1/models/{id}): the base model or a served adapter.</summary>
/// <param name="Id">The name a request's model field uses: the served model name, or the adapter's name.</param>
/// <param name="Object">Always "model".</param>
/// <param name="Created">The time of the listing, in Unix seconds (load times are not kept).</param>
/// <param name="OwnedBy">owned_by: always "loraengine".</param>
/// <param name="Root">Where the weights come from: the base model's folder, or the adapter's folder.</param>
/// <param name="Parent">null for the base model; for an adapter the model it applies to (its --lora-modules base_model_name,
/// else the served model name), as vLLM reports it.</param>
/// <param name="MaxModelLen">max_model_len: the context length in tokens (prompt plus output); null for adapters.</param>
public sealed record ModelCard(string Id, string Object, long Created, string OwnedBy, string? Root, string? Parent, int? MaxModelLen);

/// <summary>The body of GET /v1/models.</summary>
/// <param name="Object">Always "list".</param>
/// <param name="Data">The base model first, then every adapter in the order it was registered.</param>
public sealed record ModelList(string Object, List<ModelCard> Data);

/// <summary>POST /v1/load_lora_adapter (registered with <see cref="ServerOptions.AllowRuntimeLoraUpdating"/>).</summary>
/// <param name="LoraName">lora_name: the name requests will put in their model field. Required.</param>
/// <param name="LoraPath">lora_path: the PEFT adapter folder, inside <see cref="ServerOptions.LoraRoot"/> (relative to it, or
/// absolute); a path with ".." is refused. Required.</param>
/// <param name="LoadInplace">load_inplace: true reloads an adapter already loaded under that name (its new weights serve
/// every later step, including of requests running with it); without it loading a name twice is a 400.</param>
public sealed record LoadLoraRequest(string? LoraName, string? LoraPath, bool? LoadInplace) : IHasUnrecognizedFields
{
    /// <summary>Fields the request does not declare: refused with a 400 naming the first (<see cref="RequestParameters"/>).</summary>
    [JsonExtensionData]
    public Dictionary<string, JsonElement>? Unrecognized { get; init; }
}

/// <summary>POST /v1/unload_lora_adapter (registered with <see cref="ServerOptions.AllowRuntimeLoraUpdating"/>).</summary>
/// <param name="LoraName">lora_name: the adapter to remove. Required; an unknown name is a 404.</param>
/// <param name="LoraIntId">lora_int_id: part of vLLM's request shape; as in vLLM the adapter is found by lora_name alone.</param>
public sealed record UnloadLoraRequest(string? LoraName, int? LoraIntId) : IHasUnrecognizedFields
{
    /// <summary>Fields the request does not declare: refused with a 400 naming the first (<see cref="RequestParameters"/>).</summary>
    [JsonExtensionData]
    public Dictionary<string, JsonElement>? Unrecognized { get; init; }
}

/// <summary>What went wrong, as OpenAI's error object.</summary>
/// <param name="Message">What was wrong, in words meant for the client.</param>
/// <param name="Type">OpenAI's error type: BadRequestError, NotFoundError, AuthenticationError, ServiceUnavailableError,
/// InternalServerError, ...</param>
/// <param name="Param">The request field at fault as the wire names it (messages[1].content), or null.</param>
/// <param name="Code">The HTTP status code, as vLLM puts it here.</param>
public sealed record ErrorInfo(string Message, string Type, string? Param, int Code);

/// <summary>The body of every error response, and of a stream's last event when it fails: <c>{"error": {...}}</c>.</summary>
/// <param name="Error">The error.</param>
public sealed record ErrorResponse(ErrorInfo Error);

/// <summary>vLLM's Logprob as it appears in prompt_logprobs: keyed by token id.</summary>
/// <param name="Logprob">The token's natural-log probability; −9999 stands for −∞ so the body stays valid JSON.</param>
/// <param name="Rank">Its rank in the distribution, 1 = most likely.</param>
/// <param name="DecodedToken">decoded_token: the token's text.</param>
public sealed record LogprobEntry(float Logprob, int? Rank, string? DecodedToken);

internal static class Wire
{
    public static readonly JsonSerializerOptions Options = new(JsonSerializerDefaults.Web)
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    /// <summary>How deep a request body may nest (System.Text.Json's default where the options leave 0).</summary>
    public static int EffectiveMaxDepth(this JsonSerializerOptions options) => options.MaxDepth == 0 ? 64 : options.MaxDepth;
}
