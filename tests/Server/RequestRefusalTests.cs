using System.Net;
using System.Text.Json;
using Xunit;

namespace LoraEngine.Server.Tests;

/// <summary>Parameters that are not built are refused with a 400 naming them; malformed bodies never reach a 500.</summary>
public class RequestRefusalTests(ServerFixture server) : IClassFixture<ServerFixture>
{
    readonly ApiCalls _api = new(server);

    Task<ApiCalls.Reply> Complete(object extra) =>
        _api.Post("/v1/completions", CompletionParametersTests.Merge(new { prompt = "Vim is", max_tokens = 2 }, extra));

    Task<ApiCalls.Reply> Chat(object extra) =>
        _api.Post("/v1/chat/completions", CompletionParametersTests.Merge(new { messages = new[] { new { role = "user", content = "hi" } }, max_tokens = 2 }, extra));

    public static TheoryData<string, string> Refused => new()
    {
        { "best_of", """{"best_of": 2}""" },
        { "suffix", """{"suffix": "end"}""" },
        { "response_format", """{"response_format": {"type": "json_object"}}""" },
        { "tools", """{"tools": [{"type": "function", "function": {"name": "f"}}]}""" },
        { "tool_choice", """{"tool_choice": "auto"}""" },
        { "use_beam_search", """{"use_beam_search": true}""" },
        { "guided_json", """{"guided_json": {"type": "object"}}""" },
        { "allowed_token_ids", """{"allowed_token_ids": [5]}""" },
        { "priority", """{"priority": 1}""" },
        { "chat_template", """{"chat_template": "{{ 1 }}"}""" },
        { "store", """{"store": true}""" },
        { "no_such_parameter", """{"no_such_parameter": 1}""" },
    };

    [Theory]
    [MemberData(nameof(Refused))]
    public async Task Parameters_not_built_are_a_400_naming_them_on_both_routes(string param, string field)
    {
        var extra = JsonDocument.Parse(field).RootElement;
        foreach (var reply in new[] { await Complete(extra), await Chat(extra) })
        {
            Assert.Equal(HttpStatusCode.BadRequest, reply.Status);
            Assert.Equal(param, reply.Param);
            Assert.Contains(param, reply.Error.GetProperty("message").GetString());
        }
    }

    [Fact]
    public async Task Their_off_values_and_harmless_fields_are_accepted()
    {
        var accepted = new
        {
            best_of = 1, response_format = new { type = "text" }, tools = Array.Empty<object>(), tool_choice = "none", use_beam_search = false,
            priority = 0, store = false, user = "u1", metadata = new { team = "a" }, parallel_tool_calls = true, cache_salt = "s",
        };
        Assert.Equal(HttpStatusCode.OK, (await Complete(accepted)).Status);
        Assert.Equal(HttpStatusCode.OK, (await Chat(accepted)).Status);
        Assert.Equal(HttpStatusCode.OK, (await Complete(new { n = 2, best_of = 2, temperature = 1 })).Status);
    }

    [Fact]
    public async Task Image_and_audio_parts_are_refused_naming_the_part()
    {
        foreach (var part in new object[] { new { type = "image_url", image_url = new { url = "data:image/png;base64,AA==" } }, new { type = "input_audio", input_audio = new { data = "AA==", format = "wav" } } })
        {
            var reply = await Chat(new { messages = new[] { new { role = "user", content = new[] { part } } } });
            Assert.Equal(HttpStatusCode.BadRequest, reply.Status);
            Assert.Equal("messages[0].content[0]", reply.Param);
        }
    }

    [Fact]
    public async Task Bodies_that_are_not_json_objects_of_the_right_types_are_400s_and_other_media_types_415()
    {
        Assert.Equal(HttpStatusCode.UnsupportedMediaType, (await _api.PostRaw("/v1/completions", """{"prompt": "x"}""", "text/plain")).Status);
        Assert.Equal(HttpStatusCode.UnsupportedMediaType, (await _api.PostRaw("/v1/chat/completions", "x=1", "application/x-www-form-urlencoded")).Status);
        Assert.Equal(HttpStatusCode.BadRequest, (await _api.PostRaw("/v1/completions", """{"prompt": "x",""")).Status);
        Assert.Equal(HttpStatusCode.BadRequest, (await _api.PostRaw("/v1/completions", "[1, 2]")).Status);
        Assert.Equal(HttpStatusCode.BadRequest, (await _api.PostRaw("/v1/completions", [.. "{\"prompt\": \""u8, 0xff, 0xfe, .. "\"}"u8])).Status);
        var wrongType = await _api.PostRaw("/v1/completions", """{"prompt": "x", "temperature": "hot"}""");
        Assert.Equal("temperature", wrongType.Param);
        Assert.Equal("'temperature' must be a number.", wrongType.Error.GetProperty("message").GetString());
        Assert.Equal("messages[0].role", (await _api.PostRaw("/v1/chat/completions", """{"messages": [{"role": 5}]}""")).Param);
    }

    // "\ud800" alone is valid JSON but no string: prompt, stop and message contents (kept as JSON values) were 500s.
    [Theory]
    [InlineData("/v1/completions", """{"prompt": "a \ud800 b", "max_tokens": 2}""")]
    [InlineData("/v1/completions", """{"prompt": "a", "stop": ["\udc00"], "max_tokens": 2}""")]
    [InlineData("/v1/chat/completions", """{"messages": [{"role": "user", "content": "\ud800"}], "max_tokens": 2}""")]
    [InlineData("/tokenize", """{"messages": [{"role": "user", "content": [{"type": "text", "text": "\ud800"}]}]}""")]
    public async Task Unpaired_surrogate_escapes_are_a_400(string route, string body)
    {
        var reply = await _api.PostRaw(route, body);
        Assert.Equal(HttpStatusCode.BadRequest, reply.Status);
        Assert.Contains("unpaired surrogate", reply.Error.GetProperty("message").GetString());
        Assert.Equal(HttpStatusCode.OK, (await _api.PostRaw(route, body.Replace("\\ud800", "\\ud83d\\ude00").Replace("\\udc00", "\\ud83d\\ude00"))).Status);
    }

    [Fact]
    public void The_readme_lists_every_refused_and_harmless_field()
    {
        string readme = File.ReadAllText(Path.Combine(RepoRoot(), "README.md"));
        Assert.All(RequestParameters.Table, field => Assert.Contains($"`{field.Name}`", readme));
    }

    static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "LoraEngine.sln"))) return dir.FullName;
        throw new DirectoryNotFoundException("LoraEngine.sln not found above the test folder");
    }
}
