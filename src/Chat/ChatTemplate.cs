using System.Text.Json;

namespace LoraEngine.Chat;

/// <summary>One message of a chat.</summary>
public sealed record ChatTurn(string Role, string Content)
{
    /// <summary>
    /// Other message fields a template may read (name, tool_call_id, tool_calls) as template values: strings, long,
    /// double, bool, null, lists and string-keyed dictionaries (see <see cref="ChatTemplate.ToTemplateValue"/>).
    /// </summary>
    public IReadOnlyDictionary<string, object?>? Extra { get; init; }
}

/// <summary>A template error: a syntax error (with line and column) or a raise_exception() from the template.</summary>
public sealed class ChatTemplateException(string message) : Exception(message);

/// <summary>
/// A Hugging Face chat template (Jinja), parsed once and rendered per request by our own interpreter for the
/// subset chat templates use: output, if/elif/else, for with loop.*, set (with namespace), filters, tests,
/// string methods, indexing and slicing, raise_exception, strftime_now.
/// </summary>
public sealed class ChatTemplate
{
    readonly IReadOnlyList<Jinja.Node> _body;
    readonly string _source;

    ChatTemplate(IReadOnlyList<Jinja.Node> body, string source) => (_body, _source) = (body, source);

    /// <summary>Parses a Jinja chat template (tokenizer_config.json's chat_template, or a chat_template.jinja file).</summary>
    /// <exception cref="ChatTemplateException">the template uses syntax outside the supported subset; the message names it.</exception>
    public static ChatTemplate Parse(string source)
    {
        ArgumentNullException.ThrowIfNull(source);
        return new ChatTemplate(new Jinja.Parser(Jinja.Lexer.Tokenize(source)).ParseTemplate(), source);
    }

    /// <summary>
    /// Whether the template's text names <paramref name="name"/> as a whole word (a variable, an attribute or a quoted
    /// key): false means no rendering can read a variable or message field of that name, so passing one has no effect.
    /// </summary>
    public bool Reads(string name) =>
        System.Text.RegularExpressions.Regex.IsMatch(_source, $@"(?<![A-Za-z0-9_]){System.Text.RegularExpressions.Regex.Escape(name)}(?![A-Za-z0-9_])");

    /// <summary>Renders the messages with HF's variables: messages, add_generation_prompt, bos_token, eos_token (+ extra).</summary>
    public string Render(IReadOnlyList<ChatTurn> messages, bool addGenerationPrompt, string? bosToken, string? eosToken,
        IReadOnlyDictionary<string, object?>? extra = null)
    {
        var vars = new Dictionary<string, object?>
        {
            ["bos_token"] = bosToken ?? "",
            ["eos_token"] = eosToken ?? "",
        };
        // Extra variables may replace bos_token and eos_token (as HF's template kwargs do), never the messages.
        if (extra != null) foreach (var (k, v) in extra) vars[k] = v;
        vars["messages"] = messages.Select(Message).ToList();
        vars["add_generation_prompt"] = addGenerationPrompt;
        return new Jinja.Renderer(vars).Render(_body);
    }

    /// <summary>
    /// Renders as <see cref="Render(IReadOnlyList{ChatTurn}, bool, string?, string?, IReadOnlyDictionary{string, object?}?)"/>;
    /// with <paramref name="continueFinalMessage"/> the text ends right after the final message's content (no end-of-turn
    /// tokens), so the model continues that message — HF's continue_final_message.
    /// </summary>
    public string Render(IReadOnlyList<ChatTurn> messages, bool addGenerationPrompt, bool continueFinalMessage, string? bosToken, string? eosToken,
        IReadOnlyDictionary<string, object?>? extra = null)
    {
        string rendered = Render(messages, addGenerationPrompt, bosToken, eosToken, extra);
        if (!continueFinalMessage) return rendered;
        if (addGenerationPrompt) throw new ArgumentException("Cannot set both continue_final_message and add_generation_prompt.", nameof(continueFinalMessage));
        if (messages.Count == 0) throw new ArgumentException("continue_final_message needs a final message.", nameof(messages));
        string final = messages[^1].Content;
        // Templates often trim the content, so look for it trimmed and keep its leading part as the template wrote it.
        int at = rendered.LastIndexOf(final.Trim(), StringComparison.Ordinal);
        if (at < 0)
            throw new ChatTemplateException("continue_final_message is set but the final message does not appear in the chat after applying the chat template.");
        string lead = final.TrimStart();
        int end = string.CompareOrdinal(rendered, at, lead, 0, lead.Length) == 0 ? at + lead.Length : at + final.Trim().Length;
        return rendered[..end];
    }

    /// <summary>A JSON value as a template value: string, long, double, bool, null, list or dictionary.</summary>
    public static object? ToTemplateValue(JsonElement json) => json.ValueKind switch
    {
        JsonValueKind.String => json.GetString(),
        JsonValueKind.Number => json.TryGetInt64(out long l) ? l : json.TryGetDouble(out double d) ? d : json.GetRawText(), // 1e400: kept as written
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        JsonValueKind.Array => json.EnumerateArray().Select(ToTemplateValue).ToList(),
        JsonValueKind.Object => ObjectValue(json),
        _ => null,
    };

    static Dictionary<string, object?> ObjectValue(JsonElement json)
    {
        var d = new Dictionary<string, object?>();
        foreach (var p in json.EnumerateObject()) d[p.Name] = ToTemplateValue(p.Value); // a repeated key: the last wins, as in Python
        return d;
    }

    static object? Message(ChatTurn m)
    {
        var message = new Dictionary<string, object?>();
        if (m.Extra != null) foreach (var (k, v) in m.Extra) message[k] = v;
        message["role"] = m.Role;
        message["content"] = m.Content;
        return message;
    }
}
