namespace LoraEngine.Chat;

/// <summary>One message of a chat.</summary>
public sealed record ChatTurn(string Role, string Content);

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

    ChatTemplate(IReadOnlyList<Jinja.Node> body) => _body = body;

    public static ChatTemplate Parse(string source)
    {
        ArgumentNullException.ThrowIfNull(source);
        return new ChatTemplate(new Jinja.Parser(Jinja.Lexer.Tokenize(source)).ParseTemplate());
    }

    /// <summary>Renders the messages with HF's variables: messages, add_generation_prompt, bos_token, eos_token (+ extra).</summary>
    public string Render(IReadOnlyList<ChatTurn> messages, bool addGenerationPrompt, string? bosToken, string? eosToken,
        IReadOnlyDictionary<string, object?>? extra = null)
    {
        var vars = new Dictionary<string, object?>
        {
            ["messages"] = messages.Select(m => (object?)new Dictionary<string, object?> { ["role"] = m.Role, ["content"] = m.Content }).ToList(),
            ["add_generation_prompt"] = addGenerationPrompt,
            ["bos_token"] = bosToken ?? "",
            ["eos_token"] = eosToken ?? "",
        };
        if (extra != null) foreach (var (k, v) in extra) vars[k] = v;
        return new Jinja.Renderer(vars).Render(_body);
    }
}
