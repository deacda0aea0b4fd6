using System.Text.Json;
using LoraEngine.Chat;
using LoraEngine.Models.Tokenization;

namespace LoraEngine.Server;

/// <summary>The chat fields /v1/chat/completions and /tokenize share.</summary>
internal interface IChatInput
{
    List<ChatMessageDto>? Messages { get; }
    bool? AddGenerationPrompt { get; }
    bool? ContinueFinalMessage { get; }
    Dictionary<string, JsonElement>? ChatTemplateKwargs { get; }
    JsonElement Documents { get; }
    string? ReasoningEffort { get; }
}

/// <summary>
/// Chat messages as vLLM reads them: roles checked, content a string, null or a list of text parts joined with "\n",
/// any image or audio part refused; then the model's chat template rendered with the request's options. Anything
/// malformed is a <see cref="BadRequestException"/> naming the field (messages[1].content[0]).
/// </summary>
internal static class ChatInputs
{
    static readonly string[] s_roles = ["system", "user", "assistant", "tool", "developer"];
    static readonly string[] s_mediaParts = ["image_url", "input_image", "image_embeds", "image_pil", "input_audio", "audio_url", "video_url", "file"];

    // Template variables the request sets itself: chat_template_kwargs may not set them as well.
    static readonly string[] s_reserved = ["messages", "add_generation_prompt", "continue_final_message", "documents", "reasoning_effort", "tools", "chat_template", "tokenize"];

    public static List<ChatTurn> Turns(List<ChatMessageDto>? messages)
    {
        if (messages is not { Count: > 0 }) throw new BadRequestException("messages must be a non-empty list", "messages");
        var turns = new List<ChatTurn>(messages.Count);
        for (int i = 0; i < messages.Count; i++)
        {
            string at = $"messages[{i}]";
            var m = messages[i] ?? throw new BadRequestException($"{at} must be an object with a role", at);
            RequestParameters.CheckNested(m, at);
            if (m.Role is null) throw new BadRequestException($"{at}.role is required", $"{at}.role");
            if (!s_roles.Contains(m.Role))
                throw new BadRequestException($"{at}.role must be one of {string.Join(", ", s_roles)}; got '{m.Role}'", $"{at}.role");
            turns.Add(new ChatTurn(m.Role, Text(m.Content, $"{at}.content")) { Extra = Extra(m) });
        }
        return turns;
    }

    static string Text(JsonElement content, string at)
    {
        switch (content.ValueKind)
        {
            case JsonValueKind.String:
                return content.GetString()!;
            case JsonValueKind.Null or JsonValueKind.Undefined:
                return "";
            case JsonValueKind.Array:
                var texts = new List<string>();
                int j = 0;
                foreach (var part in content.EnumerateArray())
                    texts.Add(PartText(part, $"{at}[{j++}]"));
                return string.Join("\n", texts);
            default:
                throw new BadRequestException($"{at} must be a string, null or a list of content parts", at);
        }
    }

    static string PartText(JsonElement part, string at)
    {
        if (part.ValueKind != JsonValueKind.Object || !part.TryGetProperty("type", out var type) || type.ValueKind != JsonValueKind.String)
            throw new BadRequestException($"{at} must be a content part: an object with a 'type'", at);
        string kind = type.GetString()!;
        if (kind is "text" or "refusal")
        {
            if (!part.TryGetProperty(kind, out var text) || text.ValueKind != JsonValueKind.String)
                throw new BadRequestException($"{at}.{kind} must be a string", $"{at}.{kind}");
            // As for a message's own fields: a part's field we do not read (cache_control, ...) is refused, not ignored.
            foreach (var field in part.EnumerateObject())
                if (field.Name != "type" && field.Name != kind)
                    throw new BadRequestException($"Unrecognized request argument supplied: {at}.{field.Name}", $"{at}.{field.Name}");
            return text.GetString()!;
        }
        if (s_mediaParts.Contains(kind)) throw new BadRequestException($"{at}: '{kind}' content parts are not supported: the model reads text only", at);
        throw new BadRequestException($"{at}: unknown content part type '{kind}'", $"{at}.type");
    }

    static Dictionary<string, object?>? Extra(ChatMessageDto m)
    {
        var extra = new Dictionary<string, object?>();
        if (m.Name != null) extra["name"] = m.Name;
        if (m.ToolCallId != null) extra["tool_call_id"] = m.ToolCallId;
        if (m.ToolCalls.ValueKind is not (JsonValueKind.Undefined or JsonValueKind.Null)) extra["tool_calls"] = ChatTemplate.ToTemplateValue(m.ToolCalls);
        return extra.Count > 0 ? extra : null;
    }

    /// <summary>
    /// The prompt text: the template with add_generation_prompt (default true), continue_final_message, documents,
    /// reasoning_effort and chat_template_kwargs as template variables (which may replace bos_token and eos_token).
    /// </summary>
    public static string Render(ChatTemplate template, HfTokenizer tokenizer, IChatInput input, IReadOnlyList<ChatTurn> turns)
    {
        bool addGenerationPrompt = input.AddGenerationPrompt ?? true, continueFinal = input.ContinueFinalMessage ?? false;
        if (addGenerationPrompt && continueFinal)
            throw new BadRequestException("Cannot set both `continue_final_message` and `add_generation_prompt` to True.", "continue_final_message");
        // A variable or message field the template never names would change nothing: refused rather than ignored.
        void MustBeRead(string name, string param)
        {
            if (!template.Reads(name)) throw new BadRequestException($"{param} is not supported: this model's chat template does not read '{name}'.", param);
        }
        for (int i = 0; i < turns.Count; i++)
            foreach (string field in turns[i].Extra?.Keys ?? Enumerable.Empty<string>())
                MustBeRead(field, $"messages[{i}].{field}");
        var extra = new Dictionary<string, object?>();
        foreach (var (name, value) in input.ChatTemplateKwargs ?? [])
        {
            if (s_reserved.Contains(name))
                throw new BadRequestException($"chat_template_kwargs may not set '{name}'; it is a request field of its own", "chat_template_kwargs");
            MustBeRead(name, "chat_template_kwargs");
            extra[name] = ChatTemplate.ToTemplateValue(value);
        }
        if (input.Documents.ValueKind is not (JsonValueKind.Undefined or JsonValueKind.Null))
        {
            MustBeRead("documents", "documents");
            extra["documents"] = ChatTemplate.ToTemplateValue(input.Documents);
        }
        if (input.ReasoningEffort != null)
        {
            MustBeRead("reasoning_effort", "reasoning_effort");
            extra["reasoning_effort"] = input.ReasoningEffort;
        }
        return template.Render(turns, addGenerationPrompt, continueFinal, tokenizer.BosToken, tokenizer.EosToken, extra);
    }
}
