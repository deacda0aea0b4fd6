using System.Text.Json;
using LoraEngine.Chat;
using Xunit;

namespace LoraEngine.Chat.Tests;

/// <summary>Renderings equal those of @huggingface/jinja (generated once by golden/generate.mjs and committed).</summary>
public class ChatTemplateTests
{
    static string Golden(string file) => Path.Combine(AppContext.BaseDirectory, "golden", file);

    public static TheoryData<int> Renderings()
    {
        var data = new TheoryData<int>();
        int n = JsonDocument.Parse(File.ReadAllText(Golden("renderings.json"))).RootElement.GetArrayLength();
        for (int i = 0; i < n; i++) data.Add(i);
        return data;
    }

    [Theory]
    [MemberData(nameof(Renderings))]
    public void Rendering_equals_huggingface_jinja(int index)
    {
        var g = JsonDocument.Parse(File.ReadAllText(Golden("renderings.json"))).RootElement[index];
        var template = ChatTemplate.Parse(File.ReadAllText(Golden(g.GetProperty("template").GetString()!)));
        var messages = g.GetProperty("messages").EnumerateArray()
            .Select(m => new ChatTurn(m.GetProperty("role").GetString()!, m.GetProperty("content").GetString()!)).ToList();
        string rendered = template.Render(messages, g.GetProperty("add_generation_prompt").GetBoolean(), "<|begin_of_text|>", "<|end_of_text|>");
        Assert.Equal(g.GetProperty("rendered").GetString(), rendered);
    }

    [Fact]
    public void Reads_says_whether_the_template_names_a_variable_or_key()
    {
        var template = ChatTemplate.Parse("{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% if m.tool_calls %}x{% endif %}{% endfor %}");
        Assert.True(template.Reads("bos_token"));
        Assert.True(template.Reads("content"));
        Assert.True(template.Reads("tool_calls"));
        Assert.False(template.Reads("documents"));
        Assert.False(template.Reads("tool")); // a whole name, not a part of one
    }

    [Fact]
    public void Raise_exception_and_syntax_errors_are_ChatTemplateExceptions()
    {
        var strict = ChatTemplate.Parse(File.ReadAllText(Golden("llama31-style.jinja")));
        var e = Assert.Throws<ChatTemplateException>(() => strict.Render([new ChatTurn("tool", "x")], true, "", ""));
        Assert.Contains("Conversation roles must be user or assistant, got tool", e.Message);
        Assert.Contains("line 1", Assert.Throws<ChatTemplateException>(() => ChatTemplate.Parse("{% if x %}oops")).Message);
        Assert.Contains("line 2", Assert.Throws<ChatTemplateException>(() => ChatTemplate.Parse("ok\n{{ 1 + }}")).Message);
        Assert.Throws<ChatTemplateException>(() => ChatTemplate.Parse("{% frobnicate %}"));
    }

    [Theory]
    [InlineData("{% for m in messages %}{{ loop.index }}/{{ loop.length }}{% if not loop.last %},{% endif %}{% endfor %}", "1/2,2/2")]
    [InlineData("{%- set ns = namespace(n=0) -%}\n{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}  {{- ns.n }}", "2")]
    [InlineData("{{ messages[-1].content | upper }}{{ messages[0]['role'][:2] }}", "Bus")]
    [InlineData("{{ 'a' if missing is defined else 'b' }}{{ missing | default('d') }}{{ (messages | length) * 2 }}", "bd4")]
    [InlineData("{{ messages | map_absent }}", null)]
    [InlineData("{{ 1 }} {% if true %}x{% endif %}\n  {% if true %}y{% endif %}", "1 xy")] // lstrip_blocks only at a line start
    [InlineData("{{ '  x  '.strip() ~ ('abc'.startswith('a')) }} {{ 'user' in ['user', 'x'] }} {{ 7 // 2 }}", "xTrue True 3")]
    public void Expressions_loops_and_namespaces(string source, string? expected)
    {
        var messages = new List<ChatTurn> { new("user", "a"), new("assistant", "b") };
        if (expected is null)
        {
            Assert.Throws<ChatTemplateException>(() => ChatTemplate.Parse(source).Render(messages, false, null, null));
            return;
        }
        Assert.Equal(expected, ChatTemplate.Parse(source).Render(messages, false, null, null));
    }

    static readonly ChatTemplate s_vimTiny = ChatTemplate.Parse(File.ReadAllText(Golden("vim-tiny.jinja")));

    [Fact]
    public void Continue_final_message_ends_the_text_right_after_the_final_content()
    {
        List<ChatTurn> chat = [new("user", "How do I quit?"), new("assistant", "Type :q and ")];
        string closed = s_vimTiny.Render(chat, false, "<s>", "</s>");
        string open = s_vimTiny.Render(chat, false, true, "<s>", "</s>");
        Assert.EndsWith("<|eot_id|>", closed);
        Assert.EndsWith("Type :q and", open); // the template trims, so the trailing space goes too
        Assert.StartsWith(open, closed);
        Assert.Throws<ArgumentException>(() => s_vimTiny.Render(chat, true, true, "<s>", "</s>"));
        var hidden = ChatTemplate.Parse("{% for m in messages %}[{{ m.role }}]{% endfor %}");
        Assert.Throws<ChatTemplateException>(() => hidden.Render(chat, false, true, null, null));
    }

    [Fact]
    public void Extra_variables_and_message_fields_reach_the_template_as_json_values()
    {
        var template = ChatTemplate.Parse(
            "{{ bos_token }}{% if enable_thinking %}think {% endif %}{{ docs[0].title }} {% for m in messages %}{{ m.role }}:{{ m.name }}:{{ m.content }}{% endfor %}");
        var json = JsonDocument.Parse("""{"enable_thinking": true, "docs": [{"title": "vim", "n": 2}], "messages": "ignored"}""").RootElement;
        var extra = json.EnumerateObject().ToDictionary(p => p.Name, p => ChatTemplate.ToTemplateValue(p.Value));
        extra["bos_token"] = "";
        var turns = new List<ChatTurn> { new("user", "hi") { Extra = new Dictionary<string, object?> { ["name"] = "ann", ["role"] = "system" } } };
        Assert.Equal("think vim user:ann:hi", template.Render(turns, false, "<s>", null, extra));
        Assert.Equal(2L, ((Dictionary<string, object?>)((List<object?>)ChatTemplate.ToTemplateValue(json.GetProperty("docs"))!)[0]!)["n"]);
    }
}
